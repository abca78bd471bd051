"""``moderation worker --processes N``: N members of the group in one pod, one port for probes and metrics."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
from prometheus_client.parser import text_string_to_metric_families

from moderation.devtools import launch
from moderation.worker.supervisor import label_samples
from tests.worker.harness import Setup, mixed_stream, produce, read_topic


def test_every_sample_gets_its_process_label_and_each_family_is_declared_once() -> None:
    child = '# HELP m_total A counter.\n# TYPE m_total counter\nm_total 3.0\nm_lag{topic="t",partition="1"} 2.0\n'
    seen: set[str] = set()
    lines = label_samples(child, 0, seen) + label_samples(child, 1, seen)
    text = "\n".join(lines) + "\n"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("m_total", (("process", "0"),))] == 3.0
    assert samples[("m_lag", (("partition", "1"), ("process", "1"), ("topic", "t")))] == 2.0
    assert sum(line.startswith("# TYPE m_total") for line in lines) == 1


async def test_two_processes_share_the_topic_behind_one_port(deployment: Setup) -> None:
    messages, valid, _ = mixed_stream(2_000, malformed_every=10**9)
    pod = launch.WorkerProcess(
        "pod", deployment.env(), deployment.workdir / "pod.log", module=("moderation.cli", "worker", "--processes", "2")
    )
    try:
        await asyncio.to_thread(pod.wait_ready, 120)
        ready = orjson.loads(pod.get("/readyz")[1])
        assert ready["ok"] and set(ready["processes"]) == {"p0", "p1"}
        await produce(deployment.bootstrap, deployment.input_topic, messages)
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=len(valid))
        status, body = pod.get("/metrics")
        assert status == 200
        decided = {
            s.labels["process"]: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == "moderation_posts_consumed_total"
        }
    finally:
        code = await asyncio.to_thread(pod.terminate, 60)
    assert code == 0, pod.log_tail()
    counts = Counter(r.key.decode() for r in decisions)
    assert set(counts) == valid and max(counts.values()) == 1
    workers = Counter(orjson.loads(r.value)["worker"]["id"] for r in decisions)
    assert set(workers) == {"pod-p0", "pod-p1"}, workers  # both members took partitions
    assert sum(decided.values()) == len(valid) and set(decided) == {"0", "1"}
