import orjson

from moderation.emit import Topics, iso_ms, records_for
from moderation.errors import InvalidJSON
from moderation.pipeline import BatchResult, Message, Moderated, Rejected
from moderation.policy import decide, parse_policy
from moderation.records import Origin, Post

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
