"""Transactions on the input topic, real broker: posts of aborted transactions are never decided, and an
open transaction holds its partition back (the last stable offset) until it ends (issue 18)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from tests.worker.harness import Setup, WorkerProcess, post, produce_transactions, read_topic

OUTPUTS_WITH_POSTS = ("allowed", "review", "blocked", "llm-review", "dlq")


def keys(records: list) -> list[str]:
    return [r.key.decode() for r in records]


async def test_aborted_posts_are_never_decided_and_an_open_transaction_holds_its_partition(
    deployment: Setup,
) -> None:
    batches = [(i % 2 == 1, [post(5 * i + j, f"post {j} of transaction {i}") for j in range(5)]) for i in range(4)]
    committed = {k.decode() for commit, records in batches if commit for k, _ in records}
    aborted = {k.decode() for commit, records in batches if not commit for k, _ in records}
    held = [post(100 + j, f"held post {j}") for j in range(3)]  # in a transaction left open for a while
    after, beside = post(200, "after the open transaction"), post(201, "on another partition")
    bootstrap, topic = deployment.bootstrap, deployment.input_topic
    worker = WorkerProcess(deployment, "w-txn")
    holder = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"open-{topic}", enable_idempotence=True)
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce_transactions(bootstrap, topic, batches)
        decided = await read_topic(bootstrap, deployment.topic("decisions"), expect=len(committed), idle_s=3)
        in_log = await read_topic(bootstrap, topic, expect=len(committed) + len(aborted), idle_s=0.5)

        await holder.start()
        await plain.start()
        await holder.begin_transaction()
        await asyncio.gather(*[await holder.send(topic, v, key=k, partition=0) for k, v in held])
        await asyncio.gather(await plain.send(topic, after[1], key=after[0], partition=0),
                             await plain.send(topic, beside[1], key=beside[0], partition=1))  # fmt: skip
        while_open = await read_topic(bootstrap, deployment.topic("decisions"), expect=len(committed) + 1, idle_s=3)
        await holder.commit_transaction()
        at_end = await read_topic(bootstrap, deployment.topic("decisions"), expect=len(committed) + 5, idle_s=1)
        routed = [r for name in OUTPUTS_WITH_POSTS for r in await read_topic(
            bootstrap, deployment.topic(name), expect=0, idle_s=0.5)]  # fmt: skip
    finally:
        await holder.stop()
        await plain.stop()
        assert await asyncio.to_thread(worker.terminate) == 0, worker.log_tail()

    assert len(in_log) == len(committed) + len(aborted)  # the aborted posts are in the log (read uncommitted) …
    assert sorted(keys(decided)) == sorted(committed)  # … and only the committed ones were decided, once each
    assert not aborted & set(keys(routed)), "a post of an aborted transaction reached an output topic"
    # the open transaction on partition 0 holds back the post after it; partition 1 goes on
    assert set(keys(while_open)) - committed == {beside[0].decode()}
    assert sorted(set(keys(at_end)) - committed) == sorted(k.decode() for k, _ in [*held, after, beside])
    assert len(at_end) == len(set(keys(at_end)))
