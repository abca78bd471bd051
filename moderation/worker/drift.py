"""Score distributions and drift against the model's build-time reference, cheap enough for every batch.

The worker compares what the model sees now with what it saw on the reference traffic mix when it was
built (``drift_reference.json`` in the model's artifact directory, written by ``moderation models
reference``). Per task it exports one figure, the population stability index (PSI) of the score
histograms of a sliding window of recent posts against the reference: 0 = same distribution, > 0.1
moderate, > 0.25 a significant shift (the alert's threshold).

Cost per batch is one vectorised ``searchsorted`` + ``bincount`` over the batch's (posts × labels)
score matrix and O(labels × buckets) work to slide the window and recompute PSI, independent of the
window's size: the window is a queue of per-batch count matrices with a running sum.

Pure numpy and stdlib: no Prometheus and no I/O here, so the maths is unit-tested on its own
(tests/worker/test_drift.py) and the build-time code (moderation/training/reference.py) uses the same
buckets and the same histogramming.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Upper bounds of the score buckets (Prometheus ``le``). Calibrated probabilities pile up near 0 and 1,
# so the buckets are finest at the ends; 1.0 closes the range (scores never exceed it).
SCORE_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0,
)  # fmt: skip
REFERENCE_NAME = "drift_reference.json"
REFERENCE_FORMAT = 1
# Proportions are floored at this before the log ratio: an empty bucket on either side would make PSI
# infinite, and a reference built from a few thousand posts has empty buckets by chance.
PSI_FLOOR = 1e-4


def bucket_counts(scores: np.ndarray, edges: Sequence[float] = SCORE_BUCKETS) -> np.ndarray:
    """Histogram each column of ``scores`` (posts × labels) into the buckets: a (labels × buckets)
    matrix of counts. A score lands in the first bucket whose upper bound is >= it (``le``)."""
    scores = np.asarray(scores, dtype=np.float64)
    n_labels, n_buckets = scores.shape[1], len(edges)
    idx = np.searchsorted(np.asarray(edges), np.clip(scores, 0.0, 1.0), side="left")
    idx = np.minimum(idx, n_buckets - 1)
    flat = (idx + np.arange(n_labels) * n_buckets).ravel()
    return np.bincount(flat, minlength=n_labels * n_buckets).reshape(n_labels, n_buckets)


def psi(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Population stability index per row of two (rows × buckets) count or proportion matrices:
    sum over buckets of (a − e) · ln(a / e) on proportions floored at :data:`PSI_FLOOR`."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    a = np.maximum(a / np.maximum(a.sum(axis=1, keepdims=True), 1e-12), PSI_FLOOR)
    e = np.maximum(e / np.maximum(e.sum(axis=1, keepdims=True), 1e-12), PSI_FLOOR)
    result: np.ndarray = ((a - e) * np.log(a / e)).sum(axis=1)
    return result


def score_matrix(scores: Sequence[Mapping[str, Mapping[str, float]]], keys: Sequence[tuple[str, str]]) -> np.ndarray:
    """(posts × labels) matrix of the decisions' scores in ``keys`` order (the one Python loop per batch)."""
    return np.array([[s[task][label] for task, label in keys] for s in scores], dtype=np.float64).reshape(
        len(scores), len(keys)
    )


@dataclass
class SlidingWindow:
    """Bucket counts of roughly the last ``size`` posts, kept as per-batch blocks with a running sum.

    A batch is dropped whole once the posts after it fill the window, so the window holds between
    ``size`` and ``size`` + one batch posts; updates cost O(labels × buckets), not O(window)."""

    size: int
    shape: tuple[int, int]
    blocks: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    posts: int = 0
    total: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.shape, dtype=np.int64)

    def add(self, counts: np.ndarray, posts: int) -> None:
        self.blocks.append((posts, counts))
        self.total += counts
        self.posts += posts
        while self.blocks and self.posts - self.blocks[0][0] >= self.size:
            old_posts, old = self.blocks.popleft()
            self.total -= old
            self.posts -= old_posts


@dataclass(frozen=True)
class Reference:
    """The build-time reference: bucket counts per (task, label), action mix, escalation rate."""

    model: dict[str, str]
    buckets: tuple[float, ...]
    counts: dict[str, dict[str, list[int]]]
    posts: int
    actions: dict[str, float]
    escalation_rate: float
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        if data.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {REFERENCE_FORMAT}")
        buckets = tuple(float(b) for b in data["buckets"])
        counts = {t: {lab: [int(c) for c in v] for lab, v in labels.items()} for t, labels in data["scores"].items()}
        for task, labels in counts.items():
            for label, row in labels.items():
                if len(row) != len(buckets):
                    raise ValueError(f"{task}.{label}: {len(row)} counts for {len(buckets)} buckets")
        return cls(
            model={k: str(v) for k, v in data["model"].items()},
            buckets=buckets,
            counts=counts,
            posts=int(data["posts"]),
            actions={k: float(v) for k, v in data["actions"].items()},
            escalation_rate=float(data["escalation_rate"]),
            raw=dict(data),
        )

    @classmethod
    def load(cls, path: Path) -> Reference:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


class DriftTracker:
    """Per-batch score histograms (cumulative, for Prometheus) and per-task PSI over a sliding window.

    ``keys`` are the (task, label) pairs the model serves; with a ``reference`` (same buckets, covering
    every key) :meth:`psi_by_task` returns each task's PSI — the largest of its labels' — once the window
    holds ``min_posts``; without one, or before that, NaN.
    """

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        reference: Reference | None = None,
        *,
        window: int = 2000,
        min_posts: int = 500,
        buckets: Sequence[float] = SCORE_BUCKETS,
    ) -> None:
        self.keys = list(keys)
        self.buckets = tuple(buckets)
        self.cumulative = np.zeros((len(self.keys), len(self.buckets)), dtype=np.int64)
        self.sums = np.zeros(len(self.keys), dtype=np.float64)
        self.observed = 0
        self.window = SlidingWindow(window, self.cumulative.shape)
        self.min_posts = min_posts
        self.tasks = sorted({task for task, _ in self.keys})
        self._rows = {task: [i for i, (t, _) in enumerate(self.keys) if t == task] for task in self.tasks}
        self.expected: np.ndarray | None = None
        self.last = np.zeros((0, len(self.keys)))
        if reference is not None:
            if tuple(reference.buckets) != self.buckets:
                raise ValueError(f"reference buckets {reference.buckets} differ from the worker's {self.buckets}")
            missing = [f"{t}.{lab}" for t, lab in self.keys if lab not in reference.counts.get(t, {})]
            if missing:
                raise ValueError(f"reference lacks {', '.join(missing)}")
            self.expected = np.array([reference.counts[t][lab] for t, lab in self.keys], dtype=np.float64)

    def observe(self, scores: Sequence[Mapping[str, Mapping[str, float]]]) -> None:
        if not scores:
            return
        matrix = score_matrix(scores, self.keys)
        counts = bucket_counts(matrix, self.buckets)
        self.last = matrix
        self.cumulative += counts
        self.sums += matrix.sum(axis=0)
        self.observed += len(scores)
        self.window.add(counts, len(scores))

    def psi_by_task(self) -> dict[str, float]:
        if self.expected is None or self.window.posts < self.min_posts:
            return {task: float("nan") for task in self.tasks}
        per_label = psi(self.window.total, self.expected)
        return {task: float(per_label[rows].max()) for task, rows in self._rows.items()}

    def top_counts(self, task: str) -> dict[str, int]:
        """Posts of the last batch per top label of ``task`` (its argmax): the category mix."""
        rows = self._rows.get(task)
        if not rows or not len(self.last):
            return {}
        top = np.bincount(self.last[:, rows].argmax(axis=1), minlength=len(rows))
        return {self.keys[rows[i]][1]: int(n) for i, n in enumerate(top) if n}
