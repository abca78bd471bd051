"""The shared pipeline on a tiny real ONNX model (tests/model_factory.py) — no Kafka needed."""

from pathlib import Path

import orjson
import pytest

from moderation.pipeline.batch import Message, Pipeline
from moderation.pipeline.dedupe import ScoreCache
from moderation.pipeline.infer import OnnxEngine
from moderation.pipeline.policy import load_policy
from moderation.pipeline.records import Origin

POLICY = load_policy(Path(__file__).parents[1] / "data" / "tiny_policy.yaml")


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> OnnxEngine:
    return OnnxEngine(tiny_model_dir, variant="int8", providers=["CPUExecutionProvider"])


def msg(value: bytes | None, offset: int) -> Message:
    return Message(value=value, origin=Origin("posts", 0, offset), received_ms=1)


def test_mixed_batch(engine: OnnxEngine) -> None:
    cache = ScoreCache(100)
    pipeline = Pipeline(engine, lambda: POLICY, cache)
    values = [
        orjson.dumps({"id": "a", "text": "the match was great"}),
        orjson.dumps({"id": "b", "text": "THE  match was great"}),  # duplicate after normalisation
        orjson.dumps({"id": "c", "text": "buy cheap stuff now"}),
        b"{oops",
        orjson.dumps({"id": "d", "text": ""}),
    ]
    result = pipeline.run([msg(v, i) for i, v in enumerate(values)])
    assert [m.post.id for m in result.moderated] == ["a", "b", "c"]
    assert [(r.message.origin.offset, r.error.code) for r in result.rejected] == [
        (3, "invalid_json"),
        (4, "empty_text"),
    ]
    assert result.scored == 2 and result.cache_hits == 1
    a, b, _ = result.moderated
    assert a.decision.scores == b.decision.scores
    assert set(a.decision.scores) == {"toxicity", "spam", "category"}
    assert set(result.timings) == {"decode", "tokenize", "infer", "language", "policy"}

    again = pipeline.run([msg(values[2], 9)])
    assert again.scored == 0 and again.cache_hits == 1


def test_cached_scores_equal_fresh_scores(engine: OnnxEngine) -> None:
    text = "what a lovely day for a walk"
    fresh = Pipeline(engine, lambda: POLICY, ScoreCache(0)).run([msg(orjson.dumps({"id": "x", "text": text}), 0)])
    cache = ScoreCache(10)
    warm = Pipeline(engine, lambda: POLICY, cache)
    warm.run([msg(orjson.dumps({"id": "y", "text": text}), 0)])
    hit = warm.run([msg(orjson.dumps({"id": "z", "text": text.upper()}), 1)])
    assert hit.cache_hits == 1
    assert hit.moderated[0].decision.scores == fresh.moderated[0].decision.scores
