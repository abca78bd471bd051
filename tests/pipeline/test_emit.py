import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.core.errors import InvalidJSON, OutputTooLarge, TextTooLarge
from moderation.pipeline.batch import BatchResult, Message, Moderated, Rejected
from moderation.pipeline.emit import Topics, dlq_record, iso_ms, plan_outputs, record_size, records_for
from moderation.pipeline.policy import decide, parse_policy
from moderation.pipeline.records import ContextSummary, Origin, Post

TOPICS = Topics("dec", "ok", "rev", "blk", "llm", "dlq")
POLICY = parse_policy("version: v9\nlabels: {toxicity.toxic: {review: 0.5, block: 0.9}}\n")
MODEL = {"name": "m", "version": "1", "variant": "int8", "provider": "CPUExecutionProvider"}


def moderated(post_id: str, toxic: float, **context: object) -> Moderated:
    post = Post(id=post_id, text=f"text of {post_id}", created_at_ms=1_000, context=dict(context))
    decision = decide(POLICY, post, {"toxicity": {"toxic": toxic}})
    return Moderated(post, decision, Message(b"raw", Origin("posts", 2, 40), key=b"k", received_ms=2_000), 2_050)


def test_routing_and_audit_record() -> None:
    result = BatchResult(moderated=[moderated("a", 0.01), moderated("b", 0.95), moderated("c", 0.6)])
    records = records_for(result, TOPICS, MODEL, "w1")
    by_topic: dict[str, list[bytes]] = {}
    for r in records:
        by_topic.setdefault(r.topic, []).append(r.key or b"")
    assert by_topic == {"dec": [b"a", b"b", b"c"], "ok": [b"a"], "blk": [b"b"], "rev": [b"c"], "llm": [b"c"]}
    audit = orjson.loads(records[0].value)
    assert audit["action"] == "allow" and audit["policy_version"] == "v9" and audit["model"] == MODEL
    assert audit["origin"] == {"topic": "posts", "partition": 2, "offset": 40}
    assert audit["latency_ms"] == 50 and audit["created_at"] == iso_ms(1_000)
    assert "text" not in records[0].value.decode()  # the audit trail carries no post text


def test_llm_review_record_is_self_contained() -> None:
    records = records_for(BatchResult(moderated=[moderated("c", 0.6)]), TOPICS, MODEL, "w1")
    llm = next(r for r in records if r.topic == "llm")
    doc = orjson.loads(llm.value)
    assert doc["post"]["text"] == "text of c" and doc["triggers"] == ["low_confidence"]
    assert doc["scores"] == {"toxicity": {"toxic": 0.6}} and doc["reasons"]
    assert doc["thresholds"] == {"toxicity.toxic": {"review": 0.5, "block": 0.9, "near_block": 0.7}}
    assert ("triggers", b"low_confidence") in llm.headers


def test_dlq_keeps_original_bytes_and_explains() -> None:
    raw = b"\xff not json"
    rejected = Rejected(Message(raw, Origin("posts", 1, 7), key=b"key1"), InvalidJSON("message is not valid JSON"))
    (record,) = records_for(BatchResult(rejected=[rejected]), TOPICS, MODEL, "w1")
    headers = dict(record.headers)
    assert record.topic == "dlq" and record.value == raw and record.key == b"key1"
    assert headers["error.class"] == b"invalid_json" and headers["origin.offset"] == b"7"
    assert headers["origin.topic"] == b"posts" and headers["origin.partition"] == b"1"
    assert b"not valid JSON" in headers["error.message"] and headers["worker.version"]


def test_tombstone_stays_null_in_the_dlq() -> None:
    rejected = Rejected(Message(None, Origin("posts", 0, 3), key=b"k"), InvalidJSON("tombstone"))
    (record,) = records_for(BatchResult(rejected=[rejected]), TOPICS, MODEL, "w1")
    assert record.value is None and record.key == b"k"


@pytest.mark.parametrize("size", [999_000, 1_000_001, 5_000_000])
def test_dlq_copy_of_an_oversized_input_is_a_bounded_prefix_with_size_and_hash(size: int) -> None:
    raw = b"{" + b"x" * (size - 1)
    rejected = Rejected(Message(raw, Origin("posts", 0, 9), key=b"k" * 5000), TextTooLarge("too big"))
    record = dlq_record(rejected, TOPICS, "w1", max_record_bytes=1_000_000)
    headers = dict(record.headers)
    assert record_size(record) <= 1_000_000
    assert record.value is not None and raw.startswith(record.value)
    assert headers["original.size"] == str(size).encode() and headers["payload.truncated"] == b"true"
    assert headers["original.sha256"] == hashlib.sha256(raw).hexdigest().encode()
    assert record.key == b"k" * 1024 and headers["original.key.size"] == b"5000"


def test_small_dlq_copy_is_untouched() -> None:
    rejected = Rejected(Message(b"{bad", Origin("posts", 0, 9), key=b"k"), InvalidJSON("bad"))
    record = dlq_record(rejected, TOPICS, "w1", max_record_bytes=1_000_000)
    assert record.value == b"{bad" and "original.size" not in dict(record.headers)


def test_omitted_context_carries_size_and_hash_instead() -> None:
    item = moderated("big", 0.6)
    post = Post(
        id="big", text="t", context={"blob": "x"}, context_omitted=ContextSummary(size_bytes=980_000, sha256="ab" * 32)
    )
    item = Moderated(post, item.decision, item.message, item.decided_ms)
    for record in records_for(BatchResult(moderated=[item]), TOPICS, MODEL, "w1"):
        doc = orjson.loads(record.value)
        if "post" in doc:
            assert doc["post"]["context"] is None
            assert doc["post"]["context_omitted"] == {"bytes": 980_000, "sha256": "ab" * 32}


def test_a_post_whose_outputs_cannot_be_written_goes_to_the_dlq_and_the_rest_go_on() -> None:
    good = moderated("good", 0.01)
    bad = moderated("bad", 0.6)
    huge = Post(id="bad", text="y" * 30_000, context={})
    bad = Moderated(huge, bad.decision, bad.message, bad.decided_ms)
    groups = plan_outputs(BatchResult(moderated=[good, bad]), TOPICS, MODEL, "w1", max_record_bytes=20_000)
    assert [g.rejected is None for g in groups] == [True, False]
    assert {r.topic for r in groups[0].records} == {"dec", "ok"}
    (dlq,) = groups[1].records
    assert dlq.topic == "dlq" and dlq.value == b"raw"  # the original input bytes
    assert isinstance(groups[1].rejected.error, OutputTooLarge)
    assert dict(dlq.headers)["error.class"] == b"output_too_large"


def test_iso_ms_never_raises() -> None:
    assert iso_ms(-62_135_600_400_000) is None or iso_ms(-62_135_600_400_000).startswith("0")
    assert iso_ms(253_402_304_399_000 * 10) is None


@given(st.integers(min_value=0, max_value=10**14 - 1))
def test_iso_ms_is_exact_rfc3339_utc(epoch_ms: int) -> None:
    exact = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    assert iso_ms(epoch_ms) == exact.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_without_action_topics_a_post_is_one_audit_record() -> None:
    result = BatchResult(moderated=[moderated("a", 0.01), moderated("c", 0.6)])
    lean = Topics("dec", "ok", "rev", "blk", "llm", "dlq", per_action=False)
    by_topic: dict[str, list[bytes]] = {}
    for r in records_for(result, lean, MODEL, "w1"):
        by_topic.setdefault(r.topic, []).append(r.key or b"")
    assert by_topic == {"dec": [b"a", b"c"], "llm": [b"c"]}  # escalations still reach the LLM reviewer
