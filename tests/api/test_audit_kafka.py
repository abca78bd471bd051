"""Both doors, one trail: with MODERATION_API_AUDIT the API writes what may be stored to the real broker —
the post to the api-posts topic, the decision (no text) to the decisions topic — and ``moderation replay``
re-decides those decisions from their origin like the stream's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from moderation.core.settings import DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, Settings
from tests.api.conftest import start_api
from tests.worker.harness import read_topic

pytestmark = pytest.mark.kafka


async def test_stored_requests_reach_the_audit_trail_and_replay(
    kafka_bootstrap: str, topic_factory: Any, api_settings: dict[str, Any]
) -> None:
    decisions, posts = await topic_factory(2), await topic_factory(2)
    # the shipped model: per-row int8, so the replay's batches (4 posts) score as the API's did (one at a time);
    # the tiny test model is dynamically quantized and would differ by its batchmates (README, reproducible decisions)
    shipped = {**api_settings, "model_dir": DEFAULT_MODEL_DIR, "policy_file": DEFAULT_POLICY_FILE}
    settings = Settings(
        **shipped,
        bootstrap_servers=kafka_bootstrap,
        api_audit=True,
        decisions_topic=decisions,
        api_posts_topic=posts,
    )
    api = await start_api(settings)
    try:
        await api.proc.start_audit(api.service)
        stored = [await api.analyze(f"comment number {i} about the football match last night") for i in range(3)]
        kept_back = await api.analyze("do not keep this one", doNotStore=True)
        moderated = await api.post("/v1/moderate", {"id": "m-1", "text": "buy now cheap deals", "lang": "en"})
        private = await api.post("/v1/moderate", {"id": "m-2", "text": "private words", "doNotStore": True})
        assert [s for s, _, _ in [*stored, kept_back, moderated, private]] == [200] * 6
        assert moderated[1]["stored"] is True and private[1]["stored"] is False
        assert api.service.audit is not None
        await asyncio.wait_for(api.service.audit.queue.join(), 30)
    finally:
        await api.http.close()
        if api.service.audit is not None:
            await api.service.audit.close(10)
        await api.proc.producer.stop()
        await api.service.batcher.stop()
        await api.server.close()
        await api.probes.close()

    records = await read_topic(kafka_bootstrap, decisions, expect=4, idle_s=1, strict=True)
    docs = [orjson.loads(r.value) for r in records]
    assert len(docs) == 4 and "m-1" in {d["post_id"] for d in docs} and "m-2" not in {d["post_id"] for d in docs}
    assert all(d["origin"]["topic"] == posts and "text" not in d and "post" not in d for d in docs)
    assert all(dict(r.headers)["action"] == orjson.loads(r.value)["action"].encode() for r in records)
    texts = [orjson.loads(r.value)["text"] for r in await read_topic(kafka_bootstrap, posts, expect=4, idle_s=1)]
    assert "do not keep this one" not in texts and "private words" not in texts and len(texts) == 4
    assert sum(1 for d in docs if d["model"]["name"] == "moderation-minilm") == 4
    assert all(d["scores"] for d in docs)

    env = {
        **os.environ,
        "MODERATION_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MODERATION_DECISIONS_TOPIC": decisions,
        "MODERATION_MODEL_DIR": str(settings.model_dir),
        "MODERATION_POLICY_FILE": str(settings.policy_file),
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "moderation.cli", "replay", "--all", "--json"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    report = orjson.loads(proc.stdout)
    assert proc.returncode == 0, (proc.stderr.decode(), report["differences"])
    assert (report["total"], report["reproduced"], report["differing"], report["missing"]) == (4, 4, 0, 0), report
