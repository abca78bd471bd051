"""Prometheus metrics of a worker, in one registry so tests can run several workers in a process.

Buckets follow measured latencies: a CPU batch of 64 scores in ~20-100 ms, a GPU batch in a few ms,
end-to-end latency at the 50k posts/hour floor is dominated by ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from moderation.models.manifest import has_file, load_manifest, verify_file
from moderation.pipeline.batch import BatchResult
from moderation.worker.drift import REFERENCE_NAME, DriftTracker, Reference


class LagGauge:
    """Consumer lag per held partition, as the autoscaler sees it (log end − committed offset; the fetch
    position until the first commit). A partition that moved to another member is reported by that
    member now, so its series is dropped here: summing lag over a fleet must not count it twice."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.series: set[tuple[str, str]] = set()

    async def report(self, consumer: Any, committed: Mapping[Any, int] | None = None) -> None:
        held: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            position = (committed or {}).get(tp)
            if position is None:
                try:
                    position = await asyncio.wait_for(consumer.position(tp), 1.0)
                except Exception:  # lag is a gauge: a missed update is not worth a failure
                    continue
            labels = (tp.topic, str(tp.partition))
            self.gauge.labels(*labels).set(max(0, end - position))
            held.add(labels)
        for labels in self.series - held:
            with contextlib.suppress(KeyError):
                self.gauge.remove(*labels)
        self.series = held


# The languages moderation_posts_by_language_total names; every other one is counted as "other", so that the
# series stay bounded whatever producers declare: the most used languages of social-media posts, and "und".
METRIC_LANGUAGES = (
    "en", "es", "pt", "fr", "de", "it", "nl", "pl", "tr", "ru", "uk", "ar", "fa", "ur", "hi", "bn",
    "id", "ms", "tl", "vi", "th", "zh", "ja", "ko", "sw", "und",
)  # fmt: skip
OTHER_LANGUAGE = "other"
MISMATCH_CONFIDENCE = 0.9  # a detection this sure that disagrees with the declared language is counted


def language_label(code: str) -> str:
    return code if code in METRIC_LANGUAGES else OTHER_LANGUAGE


STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ScoreHistograms(Collector):
    """``moderation_score`` histograms per task and label, straight from a :class:`DriftTracker`'s
    cumulative numpy counts: prometheus_client's Histogram costs a locked ``observe`` per post and
    label, this costs nothing per post (the counts are bucketed per batch, vectorised)."""

    def __init__(self) -> None:
        self.tracker: DriftTracker | None = None

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "moderation_score",
            "Calibrated scores of decided posts, per task and label (compare with the model's drift reference).",
            labels=["task", "label"],
        )
        tracker = self.tracker
        if tracker is not None:
            les = [f"{b:g}" for b in tracker.buckets]
            for row, (task, label) in enumerate(tracker.keys):
                cumulative = np.cumsum(tracker.cumulative[row]).tolist()
                buckets = [(le, float(c)) for le, c in zip(les, cumulative, strict=True)]
                buckets.append(("+Inf", float(tracker.observed)))
                family.add_metric([task, label], buckets, float(tracker.sums[row]))
        yield family


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.posts_consumed = Counter(
            "moderation_posts_consumed_total", "Messages taken from the input topic.", registry=r
        )
        self.decisions = Counter("moderation_decisions_total", "Decisions made, by action.", ["action"], registry=r)
        self.labels_fired = Counter(
            "moderation_labels_fired_total",
            "Labels at or above their review threshold.",
            ["label"],
            registry=r,
        )
        self.dlq = Counter(
            "moderation_dlq_records_total",
            "Messages dead-lettered, by error class.",
            ["error_class"],
            registry=r,
        )
        self.escalations = Counter(
            "moderation_escalations_total", "Posts sent to LLM review, by trigger.", ["trigger"], registry=r
        )
        self.cache_hits = Counter("moderation_cache_hits_total", "Posts scored from the dedupe cache.", registry=r)
        self.cache_misses = Counter("moderation_cache_misses_total", "Unique texts sent to the model.", registry=r)
        self.cache_entries = Gauge(
            "moderation_dedupe_cache_entries",
            "Texts in the dedupe cache now (at most MODERATION_DEDUPE_CACHE_SIZE).",
            registry=r,
        )
        self.batch_size = Histogram(
            "moderation_batch_size", "Posts per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "moderation_stage_duration_seconds",
            "Time per micro-batch spent in each stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.e2e_seconds = Histogram(
            "moderation_end_to_end_latency_seconds",
            "decided_at − created_at, for posts that carry created_at.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("moderation_in_flight_posts", "Posts taken but not yet committed.", registry=r)
        self.consumer_lag = Gauge(
            "moderation_consumer_lag",
            "Messages behind the log end, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Info("moderation_model", "Loaded model and the ORT provider actually in use.", registry=r)
        self.policy_info = Info("moderation_policy", "Policy version in force.", registry=r)
        self.policy_reloads = Counter(
            "moderation_policy_reloads_total", "Policy reload attempts, by outcome.", ["outcome"], registry=r
        )
        for outcome in ("loaded", "rejected"):  # exported at 0, so increase() sees the first one
            self.policy_reloads.labels(outcome)
        # A rejection is reported once per bad file (PolicyStore does not re-read it), so the alert needs
        # a state, not just the counter: 1 from a rejection until a good file is loaded.
        self.policy_file_rejected = Gauge(
            "moderation_policy_file_rejected",
            "1 while the policy file on disk was rejected and the previous policy stays in force.",
            registry=r,
        )
        self.escalated_posts = Counter(
            "moderation_escalated_posts_total",
            "Posts sent to LLM review (one per post, however many triggers fired).",
            registry=r,
        )
        self.categories = Counter(
            "moderation_category_total", "Decided posts by top category (the category mix).", ["category"], registry=r
        )
        self.posts_by_language = Counter(
            "moderation_posts_by_language_total",
            "Decided posts by the language the policy went by (declared or detected; und: undetermined); "
            f"languages outside a fixed list of {len(METRIC_LANGUAGES)} count as other.",
            ["language"],
            registry=r,
        )
        for code in (*METRIC_LANGUAGES, OTHER_LANGUAGE):  # exported at 0, so increase() sees the first one
            self.posts_by_language.labels(code)
        self.language_mismatch = Counter(
            "moderation_language_declared_mismatch_total",
            f"Posts whose producer-declared language differs from a detection at confidence >= {MISMATCH_CONFIDENCE} "
            "(a producer whose lang is not the post's: see the policy's languages.trust_declared).",
            registry=r,
        )
        self.reference_escalation = Gauge(
            "moderation_reference_escalation_ratio",
            "Share of posts escalated on the model's reference traffic mix (drift reference).",
            registry=r,
        )
        self.reference_actions = Gauge(
            "moderation_reference_action_ratio",
            "Share of each action on the model's reference traffic mix (drift reference).",
            ["action"],
            registry=r,
        )
        self.scores = ScoreHistograms()
        r.register(self.scores)
        self.drift_psi = Gauge(
            "moderation_score_drift_psi",
            "Population stability index of the recent scores against the model's build-time reference, "
            "per task (NaN until the window holds enough posts).",
            ["task"],
            registry=r,
        )

    def configure_drift(self, model_dir: Path, labels: Mapping[str, Sequence[str]], log: Any) -> None:
        """Start the score histograms for the served labels and, when the model ships a drift reference,
        the per-task PSI against it. Fails soft: without a usable reference the worker still serves and
        exports histograms, PSI stays NaN, and one log line says why (drift_reference_missing/_invalid)."""
        keys = [(task, label) for task, names in labels.items() for label in names]
        reference: Reference | None = None
        try:
            manifest = load_manifest(model_dir)
            if not has_file(model_dir, manifest, "drift_reference"):
                log.warning(
                    "drift_reference_missing",
                    model_dir=str(model_dir),
                    hint=f"no {REFERENCE_NAME} listed and present: no drift figure; create it with "
                    "`moderation models reference`",
                )
            else:
                reference = Reference.load(verify_file(model_dir, manifest, "drift_reference"))
                self.scores.tracker = DriftTracker(keys, reference)  # checks buckets and labels
        except Exception as exc:  # a bad reference must not stop moderation
            log.error("drift_reference_invalid", model_dir=str(model_dir), error=f"{type(exc).__name__}: {exc}")
            reference = None
        tracker = self.scores.tracker
        if reference is None or tracker is None:
            tracker = self.scores.tracker = DriftTracker(keys)
        else:
            self.reference_escalation.set(reference.escalation_rate)
            for action, share in reference.actions.items():
                self.reference_actions.labels(action).set(share)
            log.info("drift_reference_loaded", posts=reference.posts, model=reference.model)
        for category in labels.get("category", ()):
            self.categories.labels(category)
        for task in tracker.tasks:
            self.drift_psi.labels(task).set(float("nan"))

    def _observe_scores(self, result: BatchResult) -> None:
        tracker = self.scores.tracker
        if tracker is None or not result.moderated:
            return
        tracker.observe([m.decision.scores for m in result.moderated])
        for task, value in tracker.psi_by_task().items():
            self.drift_psi.labels(task).set(value)
        for category, n in tracker.top_counts("category").items():
            self.categories.labels(category).inc(n)

    def observe_batch(self, result: BatchResult, produce_seconds: float) -> None:
        size = len(result.moderated) + len(result.rejected)
        self.posts_consumed.inc(size)
        self.batch_size.observe(size)
        self.cache_hits.inc(result.cache_hits)
        self.cache_misses.inc(result.scored)
        for stage, seconds in result.timings.items():
            self.stage_seconds.labels(stage).observe(seconds)
        self.stage_seconds.labels("produce").observe(produce_seconds)
        for item in result.moderated:
            d = item.decision
            self.decisions.labels(d.action).inc()
            for label in d.labels:
                self.labels_fired.labels(label).inc()
            for trigger in d.triggers:
                self.escalations.labels(trigger).inc()
            if d.triggers:
                self.escalated_posts.inc()
            lang = d.language
            if lang is not None:
                self.posts_by_language.labels(language_label(lang.effective)).inc()
                if lang.declared not in (None, lang.detected) and lang.confidence >= MISMATCH_CONFIDENCE:
                    self.language_mismatch.inc()
            if item.post.created_at_ms is not None:
                self.e2e_seconds.observe(max(0.0, (item.decided_ms - item.post.created_at_ms) / 1000))
        for rejected in result.rejected:
            self.dlq.labels(rejected.error.code).inc()
        self._observe_scores(result)
