"""Evaluation metrics (sklearn.metrics underneath), checked against values worked out by hand."""

from __future__ import annotations

import builtins
import sys
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.core.errors import ConfigError
from moderation.training import metrics as M

pytest.importorskip("sklearn", reason="the metrics need the eval extra: pip install -e '.[eval]'")


def test_confusion_and_per_class_scores_by_hand() -> None:
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 1, 0, 1, 2, 2]
    out = M.multiclass(y, pred, ("a", "b", "c"))
    assert out["n"] == 6
    assert out["confusion"] == {"labels": ["a", "b", "c"], "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert out["accuracy"] == round(4 / 6, 4)
    assert out["per_class"]["a"] == {"precision": 1.0, "recall": round(2 / 3, 4), "f1": 0.8, "support": 3}
    assert out["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert out["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 4), "support": 1}
    assert out["macro_precision"] == round((1 + 0.5 + 0.5) / 3, 4)
    assert out["macro_recall"] == round((2 / 3 + 0.5 + 1) / 3, 4)
    assert out["macro_f1"] == round((0.8 + 0.5 + 2 / 3) / 3, 4)


def test_values_are_plain_python_numbers_for_the_json_report() -> None:
    out = M.binary([0, 1, 1], [0.2, 0.7, 0.4])
    for key in ("n", "accuracy", "macro_f1", "precision", "recall", "f1", "roc_auc"):
        assert type(out[key]) in (int, float), key
    assert all(type(v) in (int, float) for v in out["per_class"]["positive"].values())
    assert all(type(c) is int for row in out["confusion"]["matrix"] for c in row)


def test_a_class_absent_from_the_truth_scores_zero_and_stays_out_of_the_macro_average() -> None:
    # "c" is predicted once but never true: precision 0 (1 wrong prediction), recall undefined → 0
    out = M.multiclass([0, 0, 1, 1], [0, 2, 1, 1], ("a", "b", "c"))
    assert out["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 4), "support": 2}
    assert out["macro_f1"] == round((2 / 3 + 1.0) / 2, 4)
    assert out["macro_precision"] == 1.0 and out["macro_recall"] == 0.75


def test_a_class_never_predicted_has_zero_precision_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning included
        out = M.multiclass([0, 1, 1], [0, 0, 0], ("a", "b"))
    assert out["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert out["per_class"]["a"]["precision"] == round(1 / 3, 4)


def test_binary_reports_positive_class_and_auc() -> None:
    out = M.binary([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, ("ham", "spam"))
    assert out["confusion"]["matrix"] == [[1, 1], [1, 1]]
    assert out["confusion"]["labels"] == ["ham", "spam"]
    assert (out["precision"], out["recall"], out["f1"]) == (0.5, 0.5, 0.5)
    assert out["threshold"] == 0.5
    assert out["roc_auc"] == 0.75  # pairs (pos, neg) ranked right: (0.4>0.1), (0.9>0.1), (0.9>0.6) of 4


def test_binary_threshold_is_inclusive() -> None:
    out = M.binary([0, 1], [0.3, 0.3], threshold=0.3)
    assert out["confusion"]["matrix"] == [[0, 1], [0, 1]]
    assert out["roc_auc"] == 0.5


def test_binary_with_one_class_only_has_no_auc() -> None:
    out = M.binary([1, 1, 1], [0.2, 0.8, 0.9])
    assert out["roc_auc"] is None
    assert out["recall"] == round(2 / 3, 4) and out["precision"] == 1.0
    assert out["per_class"]["negative"]["support"] == 0
    assert out["macro_f1"] == out["f1"]  # the absent negative class stays out


def test_auc_ties_count_half_and_single_class_has_none() -> None:
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert M.roc_auc([0], [0.1]) is None
    assert M.roc_auc([], []) is None


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=60))
def test_auc_equals_the_pairwise_definition(rows: list[tuple[int, float]]) -> None:
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows])
    pos, neg = s[y == 1], s[y == 0]
    auc = M.roc_auc(y, s)
    if len(pos) == 0 or len(neg) == 0:
        assert auc is None
        return
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert auc == pytest.approx(sum(pairs) / len(pairs))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=60))
def test_confusion_counts_every_pair_once(rows: list[tuple[int, int]]) -> None:
    y = [r[0] for r in rows]
    pred = [r[1] for r in rows]
    m = M.confusion(y, pred, 4)
    assert m.shape == (4, 4) and m.dtype == np.int64
    for t in range(4):
        for p in range(4):
            assert m[t, p] == sum(1 for r in rows if r == (t, p))
    out = M.multiclass(y, pred, ("a", "b", "c", "d"))
    assert out["n"] == len(rows)
    assert out["accuracy"] == (round(sum(a == b for a, b in rows) / len(rows), 4) if rows else 0.0)


def test_empty_input_is_all_zeros() -> None:
    out = M.multiclass([], [], ("a", "b"))
    assert out["n"] == 0 and out["accuracy"] == 0.0 and out["macro_f1"] == 0.0
    assert out["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["confusion"]["matrix"] == [[0, 0], [0, 0]]
    assert M.binary([], [])["roc_auc"] is None


def test_labels_outside_the_classes_are_an_error_not_dropped() -> None:
    with pytest.raises(ValueError, match=r"prediction outside 0\.\.1: 2"):
        M.multiclass([0, 1], [0, 2], ("a", "b"))
    with pytest.raises(ValueError, match=r"true label outside 0\.\.1: -1"):
        M.confusion([-1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match=r"2 true labels but 1 predictions"):
        M.confusion([0, 1], [0], 2)


def test_agreement_is_row_wise() -> None:
    a = np.array([[1, 0], [1, 1], [0, 0]])
    b = np.array([[1, 0], [1, 0], [0, 0]])
    assert M.agreement(a, b) == pytest.approx(2 / 3)
    assert M.agreement(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)
    assert M.agreement(np.zeros((0, 2)), np.zeros((0, 2))) == 1.0


def test_without_sklearn_the_error_names_the_eval_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sklearn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[eval\]'"):
        M.binary([0, 1], [0.2, 0.8])
    with pytest.raises(ConfigError, match=r"scikit-learn"):
        M.require_sklearn()
