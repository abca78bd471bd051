"""moderation_posts_by_language_total and moderation_language_declared_mismatch_total, from decided batches."""

from __future__ import annotations

from moderation.pipeline.batch import BatchResult, Message, Moderated
from moderation.pipeline.policy import decide, parse_policy
from moderation.pipeline.records import Origin, Post
from moderation.worker.metrics import METRIC_LANGUAGES, OTHER_LANGUAGE, WorkerMetrics

POLICY = parse_policy("version: m\nlabels: {toxicity.toxic: {review: 0.5, block: 0.9}}\n")
POSTS = [
    Post(id="en", text="Just finished my morning run along the river, feeling great!"),
    Post(id="de", text="Wir fahren am Wochenende mit den Kindern an den See"),
    Post(id="cy", text="Mae hi'n braf iawn heddiw, dw i'n mynd am dro i'r traeth gyda'r plant"),  # Welsh
    Post(id="emoji", text="😂😂😂"),
    Post(id="liar", text="Wir fahren am Wochenende mit den Kindern an den See", lang="en-US"),  # declared en
    Post(id="tlh", text="just words", lang="tlh"),  # a producer's code outside the fixed list
]


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_posts_are_counted_by_language_with_bounded_labels() -> None:
    metrics = WorkerMetrics()
    assert value(metrics, "moderation_posts_by_language_total", language="en") == 0.0  # exported before any post
    moderated = [
        Moderated(p, decide(POLICY, p, {"toxicity": {"toxic": 0.01}}), Message(b"", Origin("in", 0, i)), 0)
        for i, p in enumerate(POSTS)
    ]
    metrics.observe_batch(BatchResult(moderated=moderated), 0.0)
    counts = {
        code: value(metrics, "moderation_posts_by_language_total", language=code)
        for code in (*METRIC_LANGUAGES, OTHER_LANGUAGE)
    }
    assert {k: v for k, v in counts.items() if v} == {"en": 2.0, "de": 1.0, "und": 1.0, OTHER_LANGUAGE: 2.0}
    labels = {
        s.labels["language"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "moderation_posts_by_language_total"
    }
    assert labels == {*METRIC_LANGUAGES, OTHER_LANGUAGE}  # "cy" and "tlh" made no series of their own
    assert value(metrics, "moderation_language_declared_mismatch_total") == 1.0  # the post declared en, in German
    assert value(metrics, "moderation_escalations_total", trigger="unsupported_language") == 3.0  # de, cy, tlh
