"""moderation/worker/drift.py: bucketing, PSI, the sliding window, and the tracker's fail-soft wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moderation.worker.drift import SCORE_BUCKETS, DriftTracker, Reference, SlidingWindow, bucket_counts, psi

KEYS = [("spam", "ham"), ("spam", "spam"), ("toxicity", "toxic")]


def reference(counts: dict[str, dict[str, list[int]]]) -> Reference:
    return Reference.from_dict(
        {
            "format": 1,
            "model": {"name": "m", "version": "1"},
            "buckets": list(SCORE_BUCKETS),
            "scores": counts,
            "posts": 100,
            "actions": {"allow": 0.9, "block": 0.1},
            "escalation_rate": 0.05,
        }
    )


def scores(spam: float, toxic: float) -> dict[str, dict[str, float]]:
    return {"spam": {"ham": 1 - spam, "spam": spam}, "toxicity": {"toxic": toxic}}


def test_bucket_counts_follow_prometheus_le() -> None:
    matrix = np.array([[0.0, 0.01], [0.0100001, 1.0], [0.5, 0.5]])
    counts = bucket_counts(matrix)
    assert counts.shape == (2, len(SCORE_BUCKETS))
    assert counts.sum(axis=1).tolist() == [3, 3]
    assert counts[0, 0] == 1 and counts[0, 1] == 1  # 0 -> le=0.01, 0.0100001 -> le=0.02
    assert counts[1, 0] == 1 and counts[1, -1] == 1  # 0.01 is <= 0.01; 1.0 in the last bucket
    assert counts[0, SCORE_BUCKETS.index(0.5)] == 1


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    base = np.array([[50, 30, 20]])
    assert psi(base * 3, base)[0] == pytest.approx(0.0)
    small = psi(np.array([[45, 33, 22]]), base)[0]
    large = psi(np.array([[10, 30, 60]]), base)[0]
    assert 0 < small < 0.1 < 0.25 < large
    assert math.isfinite(psi(np.array([[0, 0, 100]]), np.array([[100, 0, 0]]))[0])  # empty buckets: floored


def test_window_drops_whole_batches_and_keeps_a_running_sum() -> None:
    window = SlidingWindow(10, (1, 2))
    for _ in range(7):
        window.add(np.array([[2, 1]]), 3)
    assert 10 <= window.posts < 13
    assert window.total.tolist() == [[2 * len(window.blocks), len(window.blocks)]]


def test_tracker_reports_drift_per_task_once_the_window_is_full() -> None:
    rng = np.random.default_rng(0)
    ref_scores = [scores(float(s), float(t)) for s, t in zip(rng.beta(1, 8, 5000), rng.beta(1, 5, 5000), strict=True)]
    built = DriftTracker(KEYS)
    built.observe(ref_scores)
    counts: dict[str, dict[str, list[int]]] = {}
    for row, (task, label) in enumerate(KEYS):
        counts.setdefault(task, {})[label] = built.cumulative[row].tolist()
    tracker = DriftTracker(KEYS, reference(counts), window=1000, min_posts=500)
    assert all(math.isnan(v) for v in tracker.psi_by_task().values())  # empty window: no figure yet
    same = [scores(float(s), float(t)) for s, t in zip(rng.beta(1, 8, 1000), rng.beta(1, 5, 1000), strict=True)]
    for i in range(0, 1000, 64):
        tracker.observe(same[i : i + 64])
    steady = tracker.psi_by_task()
    assert steady["spam"] < 0.1 and steady["toxicity"] < 0.1
    spammy = [scores(float(s), float(t)) for s, t in zip(rng.beta(8, 1, 1200), rng.beta(1, 5, 1200), strict=True)]
    for i in range(0, 1200, 64):
        tracker.observe(spammy[i : i + 64])
    shifted = tracker.psi_by_task()
    assert shifted["spam"] > 0.25 and shifted["toxicity"] < 0.1
    assert tracker.observed == 2200 and int(tracker.cumulative.sum()) == 3 * 2200


def test_tracker_refuses_a_reference_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"lacks toxicity\.toxic"):
        DriftTracker(KEYS, reference({"spam": {"ham": [1] * len(SCORE_BUCKETS), "spam": [1] * len(SCORE_BUCKETS)}}))
    with pytest.raises(ValueError, match="counts for"):
        reference({"spam": {"ham": [1, 2]}})


def test_top_counts_is_the_category_mix_of_the_last_batch() -> None:
    keys = [("category", "sports"), ("category", "business"), ("spam", "spam")]
    tracker = DriftTracker(keys)
    tracker.observe(
        [
            {"category": {"sports": 0.9, "business": 0.1}, "spam": {"spam": 0.2}},
            {"category": {"sports": 0.3, "business": 0.7}, "spam": {"spam": 0.2}},
            {"category": {"sports": 0.6, "business": 0.4}, "spam": {"spam": 0.2}},
        ]
    )
    assert tracker.top_counts("category") == {"sports": 2, "business": 1}
    assert tracker.top_counts("nope") == {}


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, level: str):  # type: ignore[no-untyped-def]
        return lambda event, **_: self.events.append((level, event))


def test_worker_metrics_fail_soft_without_a_usable_reference(tiny_model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A model without a reference, or with a corrupt one, still serves: histograms, NaN drift, one log line."""
    import json
    import shutil

    from prometheus_client import generate_latest

    from moderation.models.manifest import load_manifest
    from moderation.worker.metrics import WorkerMetrics

    labels = load_manifest(tiny_model_dir).labels()
    metrics, log = WorkerMetrics(), Log()
    metrics.configure_drift(tiny_model_dir, labels, log)
    assert log.events == [("warning", "drift_reference_missing")]
    text = generate_latest(metrics.registry).decode()
    assert 'moderation_score_bucket{label="' in text and "moderation_score_drift_psi{" in text

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["drift_reference"] = {"path": "drift_reference.json", "sha256": "0" * 64, "optional": True}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (broken / "drift_reference.json").write_text("{}")
    metrics, log = WorkerMetrics(), Log()
    metrics.configure_drift(broken, labels, log)
    assert log.events == [("error", "drift_reference_invalid")]
    assert metrics.scores.tracker is not None and metrics.scores.tracker.expected is None
