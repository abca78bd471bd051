"""Reviewers' verdicts → training data: ``moderation models feedback`` and ``models build --feedback``.

Export: ``moderation.verdicts`` is read from the beginning to its current end; per post the verdict
that counts is the latest **human** verdict, else the latest LLM verdict (people overrule the LLM
whatever the order); ``needs_human`` records are not answers and are skipped. An LLM verdict is a
training label only when a second signal backs it (``moderation.review.guard.slm_agrees``: the SLM
leaned the same way, for ``block`` with a label in common), and then at half the weight of a person's
(:data:`LLM_AGREED_WEIGHT`); an LLM verdict the SLM does not back is left out, and so is any LLM
verdict on a post that tries to instruct its reviewer (the ``prompt_injection`` trigger, or the
detector on the text now) — whatever the LLM consumer that wrote it checked. Each counted verdict
becomes one JSON line: ``{"id", "text", "action", "labels", "category", "reviewer", "reviewer_kind",
"decided_at", "overrides_action", "source", "weight"}`` with ``source`` ``human`` (weight 1.0) or
``llm+slm`` (weight 0.5).

Build: every line becomes one example per task (toxicity from the labels, spam from ``spam.spam``,
category when the reviewer set one) under the source ``review_feedback``, with the line's weight as
its loss weight, hash-split 90/10 into train and val only. Test splits stay the public data sets' own,
so feedback can never leak into evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from moderation.core.errors import BrokerError, ConfigError
from moderation.core.settings import Settings
from moderation.review import guard
from moderation.training import data as D

FEEDBACK_VAL = 0.10
_RANK = {"human": 1, "llm": 0}
HUMAN_WEIGHT = 1.0
LLM_AGREED_WEIGHT = 0.5
"""Loss weight of an LLM verdict the SLM agrees with: the SLM was unsure (that is why it escalated), so two
machine signals together count for half a person."""


def latest_verdicts(docs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """post id → the verdict that counts (human over LLM, then the latest ``decided_at``, then the later record)."""
    best: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
    for doc in docs:
        if doc.get("kind") != "verdict" or doc.get("action") not in ("allow", "block"):
            continue
        post_id = doc.get("post_id")
        if not isinstance(post_id, str):
            continue
        rank = (_RANK.get(str(doc.get("reviewer_kind")), -1), str(doc.get("decided_at") or ""))
        if post_id not in best or rank >= best[post_id][0]:
            best[post_id] = (rank, doc)
    return {post_id: doc for post_id, (_, doc) in best.items()}


def provenance(doc: dict[str, Any]) -> tuple[str, float] | None:
    """(source, weight) of a counted verdict as a training label, or None when it must not be one: an LLM
    verdict without a second signal, or on a post that tries to instruct its reviewer."""
    if doc.get("reviewer_kind") == "human":
        return "human", HUMAN_WEIGHT
    if doc.get("reviewer_kind") != "llm":
        return None
    overrides = doc.get("overrides") if isinstance(doc.get("overrides"), dict) else None
    if guard.injection_in({"triggers": (overrides or {}).get("triggers"), "post": doc.get("post")}):
        return None
    labels = [str(x) for x in doc.get("labels") or []]
    if not guard.slm_agrees(overrides, str(doc.get("action")), labels):
        return None
    return "llm+slm", LLM_AGREED_WEIGHT


def labelled(doc: dict[str, Any]) -> dict[str, Any] | None:
    """One verdict → one labelled line; None when it carries no text to learn from or must not teach."""
    text = (doc.get("post") or {}).get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    origin = provenance(doc)
    if origin is None:
        return None
    return {
        "id": doc["post_id"],
        "text": text,
        "action": doc["action"],
        "labels": sorted(doc.get("labels") or []),
        "category": doc.get("category"),
        "reviewer": doc.get("reviewer"),
        "reviewer_kind": doc.get("reviewer_kind"),
        "decided_at": doc.get("decided_at"),
        "overrides_action": (doc.get("overrides") or {}).get("action"),
        "source": origin[0],
        "weight": origin[1],
    }


def labelled_lines(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    chosen = latest_verdicts(docs)
    return [line for post_id in sorted(chosen) if (line := labelled(chosen[post_id])) is not None]


async def read_verdicts(settings: Settings, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Every record of the verdicts topic up to the end it had when we started."""
    from aiokafka import AIOKafkaConsumer

    from moderation.worker.security import client_kwargs

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,
        **client_kwargs(settings),
    )
    try:
        await asyncio.wait_for(consumer.start(), 30)
        consumer.subscribe([settings.verdicts_topic])  # no group: every partition is ours
        loop = asyncio.get_running_loop()
        until = loop.time() + 15
        while not consumer.assignment() and loop.time() < until:
            await consumer.getmany(timeout_ms=200, max_records=1)  # drives metadata; nothing is consumed yet
            if consumer.assignment():
                break
        tps = sorted(consumer.assignment())
    except Exception as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise BrokerError(
            f"cannot read {settings.verdicts_topic} from {settings.bootstrap_servers} ({type(exc).__name__}: {exc}); "
            "check MODERATION_BOOTSTRAP_SERVERS"
        ) from None
    try:
        if not tps:
            raise ConfigError(
                f"topic {settings.verdicts_topic} does not exist at {settings.bootstrap_servers}; "
                "set MODERATION_VERDICTS_TOPIC to the verdicts topic"
            )
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        docs: list[dict[str, Any]] = []
        deadline = loop.time() + timeout_s
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            if loop.time() > deadline:
                raise BrokerError(f"reading {settings.verdicts_topic} took over {timeout_s:g} s; try again")
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        doc = orjson.loads(r.value or b"")
                        if isinstance(doc, dict):
                            docs.append(doc)
        return docs
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10)


def export(settings: Settings, out: Path) -> dict[str, int]:
    """``moderation models feedback``: the verdicts topic → ``out`` (JSON lines); returns the counts."""
    return asyncio.run(export_async(settings, out))


async def export_async(settings: Settings, out: Path) -> dict[str, int]:
    docs = await read_verdicts(settings)
    chosen = latest_verdicts(docs)
    lines = labelled_lines(docs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return {
        "records": len(docs),
        "posts": len(lines),
        "human": sum(1 for line in lines if line["source"] == "human"),
        "llm": sum(1 for line in lines if line["source"] == "llm+slm"),
        "llm_left_out": sum(1 for d in chosen.values() if d.get("reviewer_kind") == "llm") - sum(
            1 for line in lines if line["source"] == "llm+slm"
        ),
    }


def examples_of(line: dict[str, Any]) -> list[D.Example]:
    """One labelled line → its examples (toxicity, spam, and category when set)."""
    text, labels = D.clean(str(line["text"])), set(line.get("labels") or [])
    weight = line_weight(line)
    tox = tuple(int(f"toxicity.{name}" in labels) for name in D.TOXICITY_LABELS)
    kind = str(line.get("reviewer_kind") or "")
    out = [
        D.Example(text, "toxicity", tox, (1,) * len(tox), D.FEEDBACK_SOURCE, kind, weight),
        D.Example(text, "spam", (int("spam.spam" in labels),), (1,), D.FEEDBACK_SOURCE, "verdict", weight),
    ]
    category = line.get("category")
    if category in D.CATEGORY_LABELS:
        out.append(
            D.Example(text, "category", (D.CATEGORY_LABELS.index(category),), (1,), D.FEEDBACK_SOURCE, "", weight)
        )
    return out


def line_weight(line: dict[str, Any]) -> float:
    """A line's loss weight: its ``weight`` (in (0, 1]), or 1.0 for files exported before there was one."""
    if "weight" not in line:
        return HUMAN_WEIGHT
    weight = line["weight"]
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 < weight <= 1.0:
        raise ValueError(f"weight {weight!r} is not a number in (0, 1]")
    return float(weight)


def load_examples(path: Path) -> list[D.Example]:
    """A ``moderation models feedback`` file → examples; a bad line is an error that names it."""
    if not path.is_file():
        raise ConfigError(f"--feedback {path}: no such file; export one with `moderation models feedback`")
    out: list[D.Example] = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            if not isinstance(line, dict) or not isinstance(line.get("text"), str):
                raise ValueError("not a labelled line (no text)")
            out += examples_of(line)
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise ConfigError(
                f"--feedback {path}, line {n}: {exc}; re-export it with `moderation models feedback`"
            ) from None
    return out


def add_to_corpus(corpus: D.Corpus, examples: list[D.Example]) -> dict[str, int]:
    """Feedback examples into the corpus' train and val parts (never test); returns how many went where."""
    counts = {"train": 0, "val": 0}
    for ex in examples:
        split: D.Split = "val" if D.bucket(D.FEEDBACK_SOURCE, ex.text) < FEEDBACK_VAL else "train"
        corpus.parts.setdefault((D.FEEDBACK_SOURCE, split), []).append(ex)
        counts[split] += 1
    return counts
