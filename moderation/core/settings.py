"""The one typed settings object.

Every knob is declared exactly once here, with its ``MODERATION_*`` environment name, default and
meaning. The CLI, the worker, the demo and the tests all read settings from this object so that a
deployment can be configured from a ConfigMap without touching code.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.core.errors import BrokerError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "models" / "artifacts" / "moderation-minilm"
DEFAULT_POLICY_FILE = PACKAGE_DIR / "pipeline" / "policies" / "default.yaml"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "moderation"


class Settings(BaseSettings):
    """Configuration for every moderation process; env vars are ``MODERATION_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MODERATION_", extra="ignore", frozen=True)

    # --- Kafka -------------------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "",
        description="Kafka bootstrap servers, comma separated; unset: the local broker `moderation kafka up` runs "
        "(its state file, see kafka_state_dir), else start-up stops naming both (moderation/core/bootstrap.py).",
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed",
        description="What every consumer reads: read_committed skips records of aborted transactions and waits "
        "at an open transaction (the last stable offset); read_uncommitted reads them all.",
    )
    group_id: str = Field("moderation-workers", description="Consumer group shared by all worker replicas.")
    input_topic: str = Field("posts", description="Topic producers write posts to.")
    decisions_topic: str = Field("moderation.decisions", description="Audit trail: one record per post.")
    allowed_topic: str = Field("moderation.allowed", description="Posts whose action is allow.")
    blocked_topic: str = Field("moderation.blocked", description="Posts whose action is block.")
    review_topic: str = Field("moderation.review", description="Posts whose action is review.")
    llm_review_topic: str = Field(
        "moderation.llm-review", description="Uncertain posts with text, scores and the trigger that fired."
    )
    action_topics: bool = Field(
        True,
        description="Also write each decision with its post to the topic of its action (allowed / review / "
        "blocked); off: moderation.decisions (no text) is the only per-post record — consumers already have "
        "the post by its id. Costs ~1 record per post (BENCHMARKS.md).",
    )
    dlq_topic: str = Field("moderation.dlq", description="Undecodable input, original bytes + error headers.")
    topic_partitions: int = Field(4, ge=1, description="Partitions used when the worker creates its topics.")

    # --- Kafka connection security (README "Secure connections"; checked in _check_security) ---------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism for SASL_* protocols: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512."
    )
    sasl_username: str = Field("", description="SASL user name (SASL_* protocols only).")
    sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (SASL_* protocols only); never logged or printed."
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle that signed the broker's certificate (SSL/SASL_SSL); default: system CAs."
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (SSL/SASL_SSL); may also hold the key."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile, if not in that file.")
    ssl_check_hostname: bool = Field(
        True, description="Verify that the broker's certificate names the host connected to (SSL/SASL_SSL)."
    )

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _protocol_case(cls, value: Any) -> Any:
        return value.strip().upper().replace("-", "_") if isinstance(value, str) else value  # sasl_ssl → SASL_SSL

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_case(cls, value: Any) -> Any:
        return value.strip().upper().replace("_", "-") if isinstance(value, str) else value  # scram_sha_512 ok

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", "escalation_target", "api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        protocol = self.security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
        if sasl and not (self.sasl_username and self.sasl_password.get_secret_value()):
            raise ValueError(
                f"MODERATION_SECURITY_PROTOCOL={protocol} needs MODERATION_SASL_USERNAME and "
                "MODERATION_SASL_PASSWORD (in Kubernetes: the moderation-kafka-credentials Secret)"
            )
        if not sasl and (self.sasl_username or self.sasl_password.get_secret_value()):
            raise ValueError(
                f"MODERATION_SASL_USERNAME/PASSWORD are set but MODERATION_SECURITY_PROTOCOL={protocol} does not "
                "use SASL; set it to SASL_SSL (or SASL_PLAINTEXT) or unset the credentials"
            )
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        for name, path in files.items():
            if path is None:
                continue
            if not tls:
                raise ValueError(
                    f"MODERATION_{name.upper()} is set but MODERATION_SECURITY_PROTOCOL={protocol} does not use TLS; "
                    "set it to SSL or SASL_SSL or unset the file"
                )
            if not path.is_file():
                raise ValueError(f"MODERATION_{name.upper()}={path}: no such file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("MODERATION_SSL_KEYFILE is set without MODERATION_SSL_CERTFILE (the certificate it keys)")
        return self

    # --- Micro-batching ----------------------------------------------------------------------------
    max_batch: int = Field(64, ge=1, le=4096, description="Most posts scored in one model call.")
    max_wait_ms: int = Field(50, ge=1, description="Longest a partial batch waits for more posts.")
    max_poll_interval_ms: int = Field(
        300_000, ge=10_000, description="Kafka max.poll.interval.ms; a batch must finish well within it."
    )
    batch_timeout_s: float = Field(
        60.0, gt=0, description="Upper bound for scoring+producing one batch (must be < max poll interval)."
    )
    group_instance_id: str = Field(
        "",
        description="Static group membership (group.instance.id), so a restarted worker gets its partitions back "
        "at once: default worker_id if set (the pod name in k8s), else <hostname>-<slot>; 'none' turns it off.",
    )
    session_timeout_ms: int = Field(
        15_000,
        ge=6_000,
        le=300_000,
        description="Kafka session.timeout.ms: how long the group waits for a member that vanished (and did not "
        "come back under its static id) before its partitions move.",
    )
    metadata_max_age_ms: int = Field(
        30_000,
        ge=1_000,
        description="How often clients refresh topic metadata: a deleted and recreated (or repartitioned) input "
        "topic is consumed again within this time (Kafka's default is 5 min).",
    )
    startup_timeout_s: float = Field(
        60.0, gt=0, description="How long start-up retries an unreachable broker (with backoff) before exit 3."
    )
    max_text_chars: int = Field(20_000, ge=1, description="Longer posts are dead-lettered as too large.")
    max_message_bytes: int = Field(1_000_000, ge=1, description="Larger raw messages are dead-lettered.")
    max_context_bytes: int = Field(
        65_536,
        ge=0,
        description="A post whose `context` serialises larger is still decided, but output records carry the "
        "context's size and SHA-256 (`context_omitted`) instead of the context.",
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=16_384,
        description="Largest record the worker produces (key + value + headers); keep it under the broker's "
        "message.max.bytes. A DLQ copy of a larger input keeps a prefix plus the original size and SHA-256.",
    )
    dedupe_cache_size: int = Field(50_000, ge=0, description="Entries in the normalized-text → scores LRU.")

    # --- State across posts (moderation/state: authors, campaigns, verdict memory) --------------------
    state_enabled: bool = Field(
        False,
        description="Keep per-author counters, near-duplicate clusters and verdict memory and apply the policy's "
        "`state` rules (burst, repeat_offender, campaign, matches_verdict). Author state is per input partition: "
        "producers key posts by author_id (README \"State across posts\").",
    )
    state_changelog_topic: str = Field(
        "moderation.state-changelog",
        description="Compacted topic the worker writes its state to (same partition as the input, before the "
        "batch's offsets are committed) and restores it from when partitions are assigned.",
    )
    state_max_authors: int = Field(
        200_000, ge=1, description="Authors kept per worker (least recently seen evicted first)."
    )
    state_max_fingerprints: int = Field(
        50_000, ge=1, description="Near-duplicate clusters kept per worker (least recently seen evicted first)."
    )
    state_max_verdicts: int = Field(
        50_000, ge=1, description="Reviewed posts remembered for matches_verdict (oldest evicted first)."
    )

    # --- Models ------------------------------------------------------------------------------------
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Directory holding manifest.json and ONNX files.")
    model_variant: str = Field("auto", description="int8 | fp16 | fp32 | auto (fp16 on CUDA, int8 on CPU).")
    providers: str = Field(
        "CUDAExecutionProvider,CPUExecutionProvider",
        description="ONNX Runtime execution providers in preference order.",
    )
    require_provider: str = Field(
        "", description="If set, refuse to start unless this provider is the one actually in use."
    )
    intra_op_threads: int = Field(0, ge=0, description="ORT intra-op threads; 0 lets ORT pick.")
    length_buckets: str = Field("16,32,64,128", description="Sequence lengths batches are padded up to.")
    inference_threads: int = Field(1, ge=1, description="Thread-pool workers running ORT off the event loop.")
    parallel_runs: int = Field(
        1,
        ge=1,
        le=16,
        description="CPU: split each batch into up to this many ORT runs executed concurrently (use with "
        "intra_op_threads=1; see BENCHMARKS.md). Ignored on CUDA.",
    )

    # --- Policy ------------------------------------------------------------------------------------
    policy_file: Path = Field(
        DEFAULT_POLICY_FILE, description="Versioned YAML policy (thresholds, triggers)."
    )
    policy_reload_s: float = Field(5.0, gt=0, description="How often the policy file is checked for changes.")
    escalation_target: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Share of traffic to escalate, e.g. 0.05: the review/block thresholds (per label, and per "
        "category override the band names) become the band the model's manifest fitted for this target on the "
        "calibration split (`review_bands`, written by `moderation models bands`); escalation triggers stay as the "
        "policy file says. Unset: the policy file's thresholds. A target the manifest has no band for stops "
        "start-up (exit 2).",
    )

    # --- Review tier (moderation/review: the LLM-review consumer and the reviewer console) ------------
    verdicts_topic: str = Field(
        "moderation.verdicts", description="Review verdicts (LLM and human, or needs_human), keyed by post id."
    )
    llm_group_id: str = Field("moderation-llm-review", description="Consumer group of the LLM-review consumers.")
    llm_base_url: str = Field(
        "",
        description="OpenAI-compatible API base URL (vLLM, llama.cpp server, Ollama, hosted), e.g. "
        "http://vllm:8000/v1; /chat/completions is appended. Required by `moderation llm-review`.",
    )
    llm_model: str = Field("", description="Model name sent to the endpoint; verdicts say reviewer llm:<model>.")
    llm_api_key: SecretStr = Field(
        SecretStr(""), description="Bearer key for the endpoint (from a Secret); never logged."
    )
    llm_concurrency: int = Field(4, ge=1, le=256, description="Most chat-completion requests in flight at once.")
    llm_rate_per_s: float = Field(5.0, gt=0, description="Most chat-completion requests started per second.")
    llm_timeout_s: float = Field(30.0, gt=0, description="Time one chat-completion request may take.")
    llm_max_attempts: int = Field(
        3, ge=1, le=10, description="Tries per post (429/5xx/timeouts/malformed answers) before it goes to humans."
    )
    llm_backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles per try, with jitter.")
    llm_breaker_failures: int = Field(
        5, ge=1, description="Consecutive posts the endpoint failed (transport, 429, 5xx) before the breaker opens."
    )
    llm_breaker_reset_s: float = Field(
        30.0, gt=0, description="How long an open breaker sends posts straight to humans before it probes again."
    )
    llm_max_batch: int = Field(
        32, ge=1, le=1000, description="Records taken per poll; committed once every one of them is answered."
    )
    console_port: int = Field(8080, ge=0, le=65535, description="Port of the reviewer console's web UI.")
    console_users: SecretStr = Field(
        SecretStr(""),
        description="Reviewer logins, 'name:password' pairs separated by commas (from a Secret); none = nobody "
        "can log in.",
    )
    console_secret_key: SecretStr = Field(
        SecretStr(""),
        description="Key that signs console sessions and CSRF tokens; set it (a Secret) when running several "
        "replicas or to keep sessions across restarts; empty = a random key per process.",
    )
    console_session_s: float = Field(8 * 3600.0, gt=0, description="How long a console login lasts.")
    console_max_posts: int = Field(
        50_000, ge=100, description="Posts the console keeps in memory (queue plus decided, oldest dropped first)."
    )
    console_secure_cookies: bool = Field(
        False, description="Mark the console's cookies Secure (set it when the console is served over HTTPS)."
    )

    # --- Scoring API (moderation/api: `moderation serve`, Perspective-compatible + /v1/moderate) -----
    api_port: int = Field(
        8000, ge=0, le=65535, description="Port of the scoring API (probes and metrics stay on http_port)."
    )
    api_max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest the first request of a partial batch waits for more before the batch is scored "
        "(batches hold at most MODERATION_MAX_BATCH requests; under load they fill while the previous one scores).",
    )
    api_max_queue: int = Field(
        256,
        ge=1,
        description="Requests waiting to be scored at most; one more is answered 503 with Retry-After at once, so "
        "latency stays bounded (about this many / the throughput).",
    )
    api_retry_after_s: int = Field(1, ge=1, description="Retry-After (seconds) of a 503 (queue full) answer.")
    api_require_key: bool = Field(
        True, description="Every scoring request needs an API key (`key=` or X-Goog-Api-Key); false: a trusted network."
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys as 'name:key' pairs separated by commas (from a Secret); limits are the defaults below.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="YAML/JSON file of API keys with optional per-key limits ({keys: [{name, key, rate_per_s, "
        "burst, daily_quota}]}; a mounted Secret); re-read when it changes.",
    )
    api_rate_per_s: float = Field(100.0, gt=0, description="Requests per second a key may make (per replica).")
    api_burst: int = Field(200, ge=1, description="Requests a key may make at once above its rate (token bucket).")
    api_daily_quota: int = Field(
        0, ge=0, description="Requests a key may make per UTC day (per replica); 0 = no quota."
    )
    api_audit: bool = Field(
        False,
        description="Write the decision of each request that allows storing (Perspective doNotStore false or "
        "absent; /v1/moderate unless doNotStore true) to the decisions topic, and its post (with the text) to "
        "api_posts_topic, which the decision's origin names so `moderation replay` can re-decide it. Needs Kafka.",
    )
    api_posts_topic: str = Field(
        "moderation.api-posts", description="Posts the scoring API stored (api_audit): the origin of their decisions."
    )

    # --- Operations --------------------------------------------------------------------------------
    http_port: int = Field(9100, ge=0, le=65535, description="Port for /metrics, /healthz and /readyz.")
    http_host: str = Field("0.0.0.0", description="Address the HTTP server binds (127.0.0.1: local only).")
    log_format: str = Field("auto", description="json | console | auto (console on a TTY, else json).")
    log_level: str = Field("info", description="debug | info | warning | error.")
    log_post_text: bool = Field(False, description="Include post text in debug logs (off: privacy).")
    log_summary_s: float = Field(
        60.0,
        gt=0,
        description="A worker logs one info summary (posts, actions, DLQ, escalations, latency p50/p99, warnings "
        "and errors) per this many seconds; per-batch lines are debug.",
    )
    log_repeat_window_s: float = Field(
        30.0,
        ge=0,
        description="A library log line repeated within this window is counted, not printed; one summary line "
        "per window says how often it recurred (0: print every line).",
    )
    shutdown_grace_s: float = Field(20.0, gt=0, description="Time allowed to finish the batch on SIGTERM.")
    worker_id: str = Field("", description="Identifier in logs and DLQ headers; defaults to host:pid.")
    cache_dir: Path = Field(DEFAULT_CACHE_DIR, description="Where the local Kafka jars and data live.")
    kafka_state_dir: Path | None = Field(
        None,
        description="Local broker's config, data, log and state file (default <cache_dir>/kafka/state); "
        "give CI its own so it never adopts or stops a developer's broker.",
    )

    def bucket_lengths(self) -> tuple[int, ...]:
        """Parsed, sorted ``length_buckets``."""
        return tuple(sorted({int(x) for x in self.length_buckets.split(",") if x.strip()}))

    def provider_list(self) -> list[str]:
        return [p.strip() for p in self.providers.split(",") if p.strip()]


# MODERATION_* variables read outside Settings: build and test tooling, never a serving process. Known
# names, so that start-up does not warn about them (tests/core/test_cli_startup.py finds every one read).
TOOLING_ENV: dict[str, str] = {
    "MODERATION_TRAIN_LAYERS": "models build: encoder layers fine-tuned (moderation/training/build.py)",
    "MODERATION_TRAIN_EPOCHS": "models build: training epochs",
    "MODERATION_TRAIN_THREADS": "models build: torch threads",
    "MODERATION_TEACHER_CACHE": "models build: where teacher models are cached",
    "MODERATION_TOOLS_DIR": "make k8s-tools / tests/deploy: where kustomize and the validators live",
    "MODERATION_CONSOLE_SCREENSHOTS": "tests/review/test_console_browser.py: write its screenshots here",
}


def known_env_names() -> set[str]:
    """Every ``MODERATION_*`` name something reads: the settings' and :data:`TOOLING_ENV`."""
    return {f"MODERATION_{name.upper()}" for name in Settings.model_fields} | set(TOOLING_ENV)


def unknown_env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per ``MODERATION_*`` variable nothing reads (a misspelling is otherwise silently
    ignored), with the nearest valid name when there is one."""
    known = known_env_names()
    warnings = []
    for key in sorted(os.environ if environ is None else environ):
        name = key.upper()  # settings are read case-insensitively
        if not name.startswith("MODERATION_") or name in known:
            continue
        suffixes = sorted(k.removeprefix("MODERATION_") for k in known)  # the shared prefix says nothing
        near = difflib.get_close_matches(name.removeprefix("MODERATION_"), suffixes, n=1, cutoff=0.7)
        hint = f"did you mean MODERATION_{near[0]}?" if near else "see moderation/core/settings.py for the settings"
        warnings.append(f"{key} is not a setting and is ignored; {hint}")
    return warnings


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (from CLI flags) winning."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def parse_host_port(bootstrap: str, default_port: int = 9092) -> tuple[str, int]:
    """First ``host:port`` of a bootstrap string (``"a:1,b:2"`` → ``("a", 1)``)."""
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, sep, port = first.rpartition(":")
    if not sep:
        return first or "127.0.0.1", default_port
    try:
        return host or "127.0.0.1", int(port)
    except ValueError as exc:
        raise BrokerError(f"bootstrap servers {bootstrap!r}: port {port!r} is not a number.") from exc
