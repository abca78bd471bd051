"""Prometheus metrics of the scoring API (prefix ``moderation_api_``), in one registry per server."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector

from moderation.pipeline.batch import BatchResult
from moderation.worker.metrics import BATCH_BUCKETS, STAGE_BUCKETS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENDPOINTS = ("analyze", "moderate", "suggestscore", "discovery", "other")
REJECT_REASONS = ("queue_full", "draining", "rate_limited", "quota_exhausted", "missing_key", "invalid_key")


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "moderation_api_requests_total",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "moderation_api_request_duration_seconds",
            "Time from reading a request to answering it, by endpoint (all statuses).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "moderation_api_rejected_total",
            "Requests refused before scoring: queue_full / draining (503), rate_limited / quota_exhausted (429), "
            "missing_key (403), invalid_key (400).",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:  # exported at 0, so increase() sees the first one
            self.rejected.labels(reason)
        self.batch_size = Histogram(
            "moderation_api_batch_size", "Requests scored together in one batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "moderation_api_batch_duration_seconds",
            "Time to score one batch (the pipeline).",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "moderation_api_queue_wait_seconds",
            "Time a request waited for its batch to start.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("moderation_api_queue_depth", "Requests waiting to be scored now.", registry=r)
        self.decisions = Counter(
            "moderation_api_decisions_total", "Posts decided through the API, by action.", ["action"], registry=r
        )
        self.audit = Counter(
            "moderation_api_audit_records_total",
            "Stored decisions (MODERATION_API_AUDIT): written, failed (the broker refused or timed out), "
            "dropped (the write queue was full).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("written", "failed", "dropped"):
            self.audit.labels(outcome)
        self.keys = Gauge("moderation_api_keys", "API keys in force.", registry=r)
        self.key_reloads = Counter(
            "moderation_api_key_reloads_total", "Key file reloads, by outcome.", ["outcome"], registry=r
        )
        self.model_info = Info("moderation_model", "Loaded model and the ORT provider actually in use.", registry=r)
        self.policy_info = Info("moderation_policy", "Policy version in force.", registry=r)
        self.policy_reloads = Counter(
            "moderation_policy_reloads_total", "Policy reload attempts, by outcome.", ["outcome"], registry=r
        )
        for outcome in ("loaded", "rejected"):
            self.policy_reloads.labels(outcome)
            self.key_reloads.labels(outcome)

    def observe_batch(self, result: BatchResult, waits: Sequence[float], seconds: float) -> None:
        self.batch_size.observe(len(waits))
        self.batch_seconds.observe(seconds)
        for wait in waits:
            self.queue_wait.observe(wait)
        for item in result.moderated:
            self.decisions.labels(item.decision.action).inc()
