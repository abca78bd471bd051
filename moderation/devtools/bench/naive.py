"""The baseline for ``moderation bench pipeline``: the worker a user would write without this project.

A plain aiokafka consume loop: for each message, parse it, score that one post with the same ONNX
model (``engine.score([text])``), apply the same policy, produce the decision and wait for the
broker's acknowledgement, then commit the message's offset. Correct and at-least-once (nothing is
committed before its decision is acknowledged), with the same producer durability (``acks=all``) as
the shipped worker, the same model file, variant and ONNX Runtime settings — it differs only in
what the shipped worker adds: micro-batching, inference off the event loop, pipelined produce and
batched commits. It writes one record per post (the decision), while the shipped worker writes two
or three (decision, action topic, LLM review), so the comparison favours this baseline.

Run as ``python -m moderation.devtools.bench.naive``; configured by the same ``MODERATION_*`` variables as
the worker (bootstrap, input/decisions topics, group id, model dir, policy file). It prints
``ready`` once it owns partitions and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from moderation.core.bootstrap import resolved
from moderation.core.errors import InputError
from moderation.core.settings import Settings, load_settings
from moderation.pipeline.decode import decode_post
from moderation.pipeline.infer import OnnxEngine
from moderation.pipeline.policy import decide, load_policy


async def serve(settings: Settings) -> int:
    engine = OnnxEngine.from_settings(settings)
    policy = load_policy(settings.policy_file)
    consumer = AIOKafkaConsumer(
        settings.input_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,  # as the shipped worker reads
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop at once: the message in hand is redelivered
        loop.add_signal_handler(sig, main.cancel)
    announcer = asyncio.create_task(_announce_ready(consumer))
    try:
        async for msg in consumer:
            received = time.time()
            try:
                post = decode_post(msg.value, key=msg.key)
            except InputError:
                post = None  # a naive worker skips what it cannot read
            if post is not None:
                scores = engine.score([post.text])[0]
                decision = decide(policy, post, scores)
                doc = {
                    "post_id": post.id,
                    "action": decision.action,
                    "labels": list(decision.labels),
                    "scores": decision.scores,
                    "received_at": received,
                    "decided_at": time.time(),
                }
                await producer.send_and_wait(settings.decisions_topic, json.dumps(doc).encode(), key=post.id.encode())
            await consumer.commit()
    except asyncio.CancelledError:
        pass
    finally:
        announcer.cancel()
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()
    return 0


async def _announce_ready(consumer: AIOKafkaConsumer) -> None:
    while not consumer.assignment():
        await asyncio.sleep(0.1)
    print("ready", flush=True)


def main() -> None:
    settings, where = resolved(load_settings())
    print(f"kafka: {where.describe()}", flush=True)
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
