"""Evaluation metrics, checked against values worked out by hand (the eval must not need sklearn)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.training import metrics as M


def test_confusion_and_per_class_scores_by_hand() -> None:
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 1, 0, 1, 2, 2]
    out = M.multiclass(y, pred, ("a", "b", "c"))
    assert out["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert out["accuracy"] == round(4 / 6, 4)
    assert out["per_class"]["a"] == {"precision": 1.0, "recall": round(2 / 3, 4), "f1": 0.8, "support": 3}
    assert out["per_class"]["b"]["precision"] == 0.5 and out["per_class"]["b"]["recall"] == 0.5
    assert out["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 4), "support": 1}
    assert out["macro_f1"] == round((0.8 + 0.5 + 2 / 3) / 3, 4)


def test_binary_reports_positive_class_and_auc() -> None:
    out = M.binary([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, ("ham", "spam"))
    assert out["confusion"]["matrix"] == [[1, 1], [1, 1]]
    assert (out["precision"], out["recall"], out["f1"]) == (0.5, 0.5, 0.5)
    assert out["roc_auc"] == 0.75  # pairs (pos, neg) ranked right: (0.4>0.1), (0.9>0.1), (0.9>0.6) of 4


def test_auc_ties_count_half_and_single_class_has_none() -> None:
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None


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


def test_agreement_is_row_wise() -> None:
    a = np.array([[1, 0], [1, 1], [0, 0]])
    b = np.array([[1, 0], [1, 0], [0, 0]])
    assert M.agreement(a, b) == pytest.approx(2 / 3)
