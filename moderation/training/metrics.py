"""Classification metrics for the model evaluation, computed with ``sklearn.metrics``.

scikit-learn comes with the ``eval`` extra (``moderation models eval``) and the ``train`` extra
(``moderation models build``); it is imported on first use, so importing this module never needs it,
and a missing install is a :class:`ConfigError` naming the extra (:func:`require_sklearn` checks
up front). Results are plain dicts of rounded Python numbers, ready for the JSON report.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from moderation.core.errors import ConfigError

EVAL_EXTRA_HINT = "install the eval extra: pip install -e '.[eval]'"


def require_sklearn() -> ModuleType:
    """``sklearn.metrics``, or a ConfigError telling how to install it."""
    try:
        import sklearn.metrics
    except ImportError as exc:
        raise ConfigError(
            f"the model evaluation computes its metrics with scikit-learn ({exc}); {EVAL_EXTRA_HINT}"
        ) from exc
    return sklearn.metrics


def roc_auc(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve (tied scores count half); None when ``y`` holds one class only."""
    yy = np.asarray(y, dtype=np.int64)
    if len(np.unique(yy)) < 2:
        return None
    return float(require_sklearn().roc_auc_score(yy, np.asarray(score, dtype=np.float64)))


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """``[true, predicted]`` counts over the classes ``0 .. n-1``."""
    yt, yp = _labels(y_true, y_pred, n)
    if len(yt) == 0:
        return np.zeros((n, n), dtype=np.int64)
    return np.asarray(require_sklearn().confusion_matrix(yt, yp, labels=np.arange(n)), dtype=np.int64)


def report(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro averages, the confusion matrix.

    Precision, recall and F1 are 0 where undefined (no prediction, no example of the class).
    Classes absent from ``y_true`` do not enter the macro averages.
    """
    n = len(labels)
    yt, yp = _labels(y_true, y_pred, n)
    m = confusion(yt, yp, n)
    if len(yt) == 0:
        zeros = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {
            "n": 0,
            "accuracy": 0.0,
            "macro_precision": 0.0,
            "macro_recall": 0.0,
            "macro_f1": 0.0,
            "per_class": {label: dict(zeros) for label in labels},
            "confusion": {"labels": list(labels), "matrix": m.tolist()},
        }
    skm = require_sklearn()
    p, r, f, support = skm.precision_recall_fscore_support(yt, yp, labels=np.arange(n), average=None, zero_division=0.0)
    present = np.asarray(support) > 0
    return {
        "n": len(yt),
        "accuracy": round(float(skm.accuracy_score(yt, yp)), 4),
        "macro_precision": _mean(p[present]),
        "macro_recall": _mean(r[present]),
        "macro_f1": _mean(f[present]),
        "per_class": {
            label: {
                "precision": round(float(p[k]), 4),
                "recall": round(float(r[k]), 4),
                "f1": round(float(f[k]), 4),
                "support": int(support[k]),
            }
            for k, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": m.tolist()},
    }


def binary(
    y: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    labels: tuple[str, str] = ("negative", "positive"),
) -> dict[str, Any]:
    """Metrics of ``prob >= threshold`` against ``y``, plus ROC-AUC of the raw probability.

    ``precision``/``recall``/``f1`` are the positive class's (``labels[1]``).
    """
    yy = np.asarray(y, dtype=np.int64)
    pp = np.asarray(prob, dtype=np.float64)
    out = report(yy, (pp >= threshold).astype(np.int64), labels)
    pos = out["per_class"][labels[1]]
    out.update(
        threshold=threshold,
        precision=pos["precision"],
        recall=pos["recall"],
        f1=pos["f1"],
        roc_auc=None if (auc := roc_auc(yy, pp)) is None else round(auc, 4),
    )
    return out


def multiclass(
    y: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """:func:`report` of class-index predictions."""
    return report(y, pred, labels)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose decisions are identical in every column.

    Plain numpy: the columns mix binary flags and a class index, which sklearn's subset accuracy
    (multilabel indicators only) does not take.
    """
    if len(a) == 0:
        return 1.0
    aa, bb = np.asarray(a), np.asarray(b)
    if aa.ndim == 1:
        return float(np.mean(aa == bb))
    return float(np.mean(np.all(aa == bb, axis=1)))


def _labels(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both as int64 arrays of one length with every value in ``0 .. n-1`` (sklearn would drop the others)."""
    yt = np.asarray(y_true, dtype=np.int64).reshape(-1)
    yp = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(yt) != len(yp):
        raise ValueError(f"{len(yt)} true labels but {len(yp)} predictions")
    for name, arr in (("true label", yt), ("prediction", yp)):
        if len(arr) and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} outside 0..{n - 1}: {int(arr.min() if arr.min() < 0 else arr.max())}")
    return yt, yp


def _mean(values: np.ndarray) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 0.0
