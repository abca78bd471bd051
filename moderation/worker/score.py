"""``moderation score``: the worker's pipeline over JSON lines, without Kafka.

For backfills, policy dry-runs (``MODERATION_POLICY_FILE=new.yaml moderation score old.jsonl``) and
trying the models in one command. Decisions go to stdout as JSON lines, bad lines to stderr as JSON
records with the same fields as the DLQ headers; the exit code is 1 if any line was rejected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import BinaryIO

import orjson

from moderation.core.logs import configure_logging
from moderation.core.settings import Settings, load_settings
from moderation.pipeline.batch import Message, Pipeline, now_ms
from moderation.pipeline.emit import decision_document, dlq_headers
from moderation.pipeline.policy import PolicyStore
from moderation.pipeline.records import Origin


def read_batches(stream: BinaryIO, source: str, size: int) -> Iterator[list[Message]]:
    """Lines → messages (origin offset = 1-based line number); blank lines are skipped."""
    batch: list[Message] = []
    for lineno, line in enumerate(stream, start=1):
        value = line.rstrip(b"\r\n")
        if not value.strip():
            continue
        batch.append(Message(value=value, origin=Origin(source, 0, lineno), received_ms=now_ms()))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_stream(stream: BinaryIO, source: str, out: BinaryIO, err: BinaryIO, settings: Settings) -> tuple[int, int]:
    """Returns (decided, rejected)."""
    from moderation.pipeline.infer import OnnxEngine, model_record

    engine = OnnxEngine.from_settings(settings)
    info = engine.info()
    policies = PolicyStore.from_settings(settings, available_labels=info["labels"])
    pipeline = Pipeline.from_settings(engine, policies, settings)
    model = model_record(info)
    worker_id = settings.worker_id or "moderation-score"
    decided = rejected = 0
    for batch in read_batches(stream, source, settings.max_batch):
        result = pipeline.run(batch)
        for item in result.moderated:
            out.write(orjson.dumps(decision_document(item, model, worker_id)) + b"\n")
        for bad in result.rejected:
            record = {name: value.decode("utf-8", "replace") for name, value in dlq_headers(bad, worker_id)}
            err.write(orjson.dumps(record) + b"\n")
        decided += len(result.moderated)
        rejected += len(result.rejected)
    out.flush()
    return decided, rejected


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    with ExitStack() as stack:
        if args.file == "-":
            stream, source = sys.stdin.buffer, "stdin"
        else:
            try:
                stream = stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
                return 2
            source = args.file
        decided, rejected = score_stream(stream, source, sys.stdout.buffer, sys.stderr.buffer, settings)
    print(f"scored {decided} posts, rejected {rejected} lines", file=sys.stderr)
    return 1 if rejected else 0
