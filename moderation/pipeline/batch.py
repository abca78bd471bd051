"""The moderation pipeline shared by the Kafka worker and ``moderation score``.

decode → dedupe → (tokenize → infer, inside the scorer) → language → decide. Only the I/O edge differs between
callers: the worker feeds it Kafka messages and emits the result to topics, the CLI feeds it lines of
a file and writes JSON lines. ``run`` is synchronous and is called from a thread executor by the
worker, so ONNX Runtime (which releases the GIL) never blocks the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moderation.core.errors import InputError, MessageError
from moderation.core.settings import Settings
from moderation.pipeline import language
from moderation.pipeline.decode import decode_post
from moderation.pipeline.dedupe import ScoreCache, plan_inference
from moderation.pipeline.infer import Scorer
from moderation.pipeline.language import assess_languages
from moderation.pipeline.policy import Policy, PolicyStore, decide
from moderation.pipeline.records import Decision, Origin, Post, Scores


@dataclass(frozen=True, slots=True)
class Message:
    """One raw input message, as it came off the wire (or a line of a file)."""

    value: bytes | None
    origin: Origin
    key: bytes | None = None
    received_ms: int = 0


@dataclass(frozen=True, slots=True)
class Moderated:
    post: Post
    decision: Decision
    message: Message
    decided_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    message: Message
    error: MessageError


@dataclass(slots=True)
class BatchResult:
    moderated: list[Moderated] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # stage → seconds spent on the whole batch
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    scored: int = 0  # unique texts sent to the model

    def dead_letter(self, item: Moderated, error: MessageError) -> Rejected:
        """A decided post whose outputs could not be written goes to the DLQ instead."""
        self.moderated.remove(item)
        rejected = Rejected(item.message, error)
        self.rejected.append(rejected)
        return rejected


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline:
    """Decode, dedupe, score and decide one micro-batch."""

    def __init__(
        self,
        scorer: Scorer,
        policy: Callable[[], Policy],
        cache: ScoreCache,
        *,
        max_message_bytes: int = 1_000_000,
        max_text_chars: int = 20_000,
        max_context_bytes: int = 65_536,
    ) -> None:
        self.scorer = scorer
        self.policy = policy
        self.cache = cache
        self.max_message_bytes = max_message_bytes
        self.max_text_chars = max_text_chars
        self.max_context_bytes = max_context_bytes

    @classmethod
    def from_settings(cls, scorer: Scorer, policies: PolicyStore, settings: Settings) -> Pipeline:
        """The pipeline every entry point (worker, ``moderation score``) builds from the one settings object."""
        if policies.policy.languages.enabled:
            language.load()  # ~1 s, here rather than in the first batch
        return cls(
            scorer,
            lambda: policies.policy,
            ScoreCache(settings.dedupe_cache_size),
            max_message_bytes=settings.max_message_bytes,
            max_text_chars=settings.max_text_chars,
            max_context_bytes=settings.max_context_bytes,
        )

    def run(self, messages: Sequence[Message]) -> BatchResult:
        result = BatchResult()
        clock = time.perf_counter

        t0 = clock()
        posts: list[tuple[Post, Message]] = []
        for message in messages:
            try:
                post = decode_post(
                    message.value,
                    key=message.key,
                    max_message_bytes=self.max_message_bytes,
                    max_text_chars=self.max_text_chars,
                    max_context_bytes=self.max_context_bytes,
                )
            except InputError as exc:
                result.rejected.append(Rejected(message, exc))
            else:
                posts.append((post, message))
        t1 = clock()

        keys, cached, todo = plan_inference([p.text for p, _ in posts], self.cache)
        scores_by_key: dict[bytes, Scores] = dict(cached)
        model_timings = {"tokenize": 0.0, "infer": 0.0}
        if todo:
            fresh = self.scorer.score(list(todo.values()), model_timings)
            for key, scores in zip(todo, fresh, strict=True):
                scores_by_key[key] = scores
                self.cache.put(key, scores)
        t2 = clock()

        policy = self.policy()
        rule = policy.languages
        languages = assess_languages(rule, [p for p, _ in posts]) if rule.enabled else [None] * len(posts)
        t3 = clock()
        for (post, message), key, lang in zip(posts, keys, languages, strict=True):
            decision = decide(policy, post, scores_by_key[key], lang)
            result.moderated.append(Moderated(post, decision, message, now_ms()))
        t4 = clock()

        result.cache_hits = len(posts) - len(todo)
        result.scored = len(todo)
        # tokenize + infer as the engine measured them; the cache lookup counts as inference
        tokenize = min(model_timings["tokenize"], t2 - t1)
        result.timings = {
            "decode": t1 - t0,
            "tokenize": tokenize,
            "infer": t2 - t1 - tokenize,
            "language": t3 - t2,
            "policy": t4 - t3,
        }
        return result
