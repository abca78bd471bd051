"""Prometheus metrics of a worker, in one registry so tests can run several workers in a process.

Buckets follow measured latencies: a CPU batch of 64 scores in ~20-100 ms, a GPU batch in a few ms,
end-to-end latency at the 50k posts/hour floor is dominated by ``max_wait_ms``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from moderation.pipeline.batch import BatchResult

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


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
        self.drift_psi = Gauge(
            "moderation_score_drift_psi",
            "Population stability index of the recent scores against the model's build-time reference, "
            "per task (NaN until the window holds enough posts).",
            ["task"],
            registry=r,
        )

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
            if item.post.created_at_ms is not None:
                self.e2e_seconds.observe(max(0.0, (item.decided_ms - item.post.created_at_ms) / 1000))
        for rejected in result.rejected:
            self.dlq.labels(rejected.error.code).inc()
