"""Prometheus metrics of the review tier: one registry per process object, so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class LLMReviewMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.consumed = Counter("moderation_llm_review_consumed_total", "llm-review records taken.", registry=r)
        self.requests = Counter(
            "moderation_llm_requests_total",
            "Chat-completion requests, by outcome (ok, malformed_answer, rate_limited, server_error, timeout, "
            "unreachable, rejected).",
            ["outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "moderation_llm_request_duration_seconds", "Time per chat-completion request.", buckets=LLM_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter(
            "moderation_llm_verdicts_total",
            "Records written to the verdicts topic, by kind and action or needs_human reason (prompt_injection: "
            "the LLM was not asked; llm_contradicts_slm: its allow was not applied).",
            ["kind", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge("moderation_llm_in_flight_requests", "Chat-completion requests in flight.", registry=r)
        self.breaker_open = Gauge(
            "moderation_llm_circuit_open", "1 while the circuit breaker sends posts straight to humans.", registry=r
        )
        self.consumer_lag = Gauge(
            "moderation_llm_review_consumer_lag",
            "llm-review messages behind the log end, per partition.",
            ["topic", "partition"],
            registry=r,
        )


class ConsoleMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.queue_depth = Gauge("moderation_console_queue_depth", "Posts waiting for a human verdict.", registry=r)
        self.oldest_age = Gauge(
            "moderation_console_queue_oldest_age_seconds", "Age of the oldest post waiting for a human.", registry=r
        )
        self.verdicts = Counter(
            "moderation_console_verdicts_total", "Verdicts reviewers gave in this console, by action.", ["action"],
            registry=r,
        )
        self.logins = Counter(
            "moderation_console_logins_total", "Login attempts, by outcome (ok, refused).", ["outcome"], registry=r
        )
        self.refused = Counter(
            "moderation_console_refused_total",
            "Requests refused, by reason (anonymous, csrf).",
            ["reason"],
            registry=r,
        )
