"""Classification metrics in plain numpy (the eval must run without torch or scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def roc_auc(y: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve via the rank statistic (ties get average ranks); None if one class."""
    yy = np.asarray(y, dtype=np.int64)
    ss = np.asarray(score, dtype=np.float64)
    n_pos = int(yy.sum())
    n_neg = len(yy) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(ss, kind="mergesort")
    ranks = np.empty(len(ss), dtype=np.float64)
    sorted_scores = ss[order]
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[yy == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(np.asarray(y_true), np.asarray(y_pred), strict=True):
        m[int(t), int(p)] += 1
    return m


def from_confusion(m: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro averages, the matrix itself."""
    total = int(m.sum())
    per_class: dict[str, dict[str, float | int]] = {}
    f1s, ps, rs = [], [], []
    for k, label in enumerate(labels):
        tp = float(m[k, k])
        pred = float(m[:, k].sum())
        true = float(m[k, :].sum())
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_class[label] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": int(true)}
        if true:  # classes absent from the test set do not enter the macro average
            f1s.append(f)
            ps.append(p)
            rs.append(r)
    return {
        "n": total,
        "accuracy": round(float(np.trace(m)) / total, 4) if total else 0.0,
        "macro_precision": round(float(np.mean(ps)), 4) if ps else 0.0,
        "macro_recall": round(float(np.mean(rs)), 4) if rs else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "per_class": per_class,
        "confusion": {"labels": list(labels), "matrix": m.tolist()},
    }


def binary(
    y: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    labels: tuple[str, str] = ("negative", "positive"),
) -> dict[str, Any]:
    """Metrics of ``prob >= threshold`` against ``y``, plus ROC-AUC of the raw probability."""
    yy = np.asarray(y, dtype=np.int64)
    pp = np.asarray(prob, dtype=np.float64)
    out = from_confusion(confusion(yy, (pp >= threshold).astype(np.int64), 2), labels)
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
    return from_confusion(confusion(y, pred, len(labels)), labels)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose decisions are identical in every column."""
    if len(a) == 0:
        return 1.0
    aa, bb = np.asarray(a), np.asarray(b)
    if aa.ndim == 1:
        return float(np.mean(aa == bb))
    return float(np.mean(np.all(aa == bb, axis=1)))
