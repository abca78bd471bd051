"""Build-time drift reference: what the shipped model and policy do on a reference traffic mix.

    moderation models reference [--out MODEL_DIR] [--posts FILE.jsonl] [--synthetic N]

Runs the real pipeline (decode → score → policy, the worker's own code) over the mix and writes
``drift_reference.json`` next to the model: score bucket counts per task and label (the buckets the
worker exports, moderation/worker/drift.py), the action mix, the escalation rate and triggers, the
category mix. The file is recorded in manifest.json (sha256, ``optional``: the worker runs without it),
so a worker compares live traffic with exactly what was built.

The default mix needs nothing outside the repository, so CI and a fresh clone can rebuild it: the valid
posts of moderation/devtools/demo_data (real text, with their producer context) plus synthetic posts
from the benchmark workload (tokenizer vocabulary, social-media lengths). That is a weak stand-in for
production; pass ``--posts`` with a sample of real traffic (JSON lines, the input topic's schema) to
build the reference that should be alerted on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from moderation.core.settings import Settings
from moderation.models.manifest import MANIFEST_NAME, sha256_file
from moderation.pipeline.batch import Message, Pipeline
from moderation.pipeline.policy import PolicyStore
from moderation.pipeline.records import Origin
from moderation.worker.drift import REFERENCE_FORMAT, REFERENCE_NAME, SCORE_BUCKETS, DriftTracker

BATCH = 64


def default_mix(tokenizer: Any, synthetic: int, seed: int = 0) -> tuple[list[bytes], str]:
    """Demo posts (as produced, with context) + ``synthetic`` synthetic posts, as input-topic values."""
    from moderation.devtools.bench.workload import DEMO_DATA_DIR, workloads

    values = [
        line
        for path in sorted(DEMO_DATA_DIR.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]
    texts, source = workloads(tokenizer, synthetic, seed=seed)["mixed"]
    values += [orjson.dumps({"id": f"ref-{i}", "text": t}) for i, t in enumerate(texts)]
    return values, f"{DEMO_DATA_DIR.name}/*.jsonl (valid posts) + {synthetic} posts {source}"


def build_reference(values: Sequence[bytes], source: str, settings: Settings) -> dict[str, Any]:
    from moderation.pipeline.infer import OnnxEngine

    engine = OnnxEngine.from_settings(settings)
    info = engine.info()
    policies = PolicyStore.from_settings(settings, available_labels=info["labels"])
    pipeline = Pipeline.from_settings(engine, policies, settings)
    keys = [(task, label) for task, labels in info["labels"].items() for label in labels]
    tracker = DriftTracker(keys)
    actions: Counter[str] = Counter()
    triggers: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    escalated = 0
    for start in range(0, len(values), BATCH):
        messages = [
            Message(value=v, origin=Origin("reference", 0, start + i, 0))
            for i, v in enumerate(values[start : start + BATCH])
        ]
        result = pipeline.run(messages)
        tracker.observe([m.decision.scores for m in result.moderated])
        categories.update(tracker.top_counts("category"))
        for item in result.moderated:
            actions[item.decision.action] += 1
            triggers.update(item.decision.triggers)
            escalated += bool(item.decision.triggers)
    n = tracker.observed
    if n == 0:
        raise ValueError("the reference mix holds no valid post")
    scores: dict[str, dict[str, list[int]]] = {}
    for row, (task, label) in enumerate(keys):
        scores.setdefault(task, {})[label] = [int(c) for c in tracker.cumulative[row]]
    return {
        "format": REFERENCE_FORMAT,
        "model": {k: str(info[k]) for k in ("name", "version", "variant")},
        "policy_version": policies.policy.version,
        "source": source,
        "posts": n,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "buckets": list(SCORE_BUCKETS),
        "scores": scores,
        "actions": {a: round(c / n, 4) for a, c in sorted(actions.items())},
        "escalation_rate": round(escalated / n, 4),
        "escalations_by_trigger": {t: round(c / n, 4) for t, c in sorted(triggers.items())},
        "category_mix": {c: round(k / n, 4) for c, k in sorted(categories.items())},
    }


def write_reference(model_dir: Path, reference: dict[str, Any]) -> Path:
    """Write the reference and record it in manifest.json (sha256, optional), leaving every other
    entry byte-for-byte as it was (manifest.json is written as `models build` writes it)."""
    path = model_dir / REFERENCE_NAME
    path.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    manifest_path = model_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["drift_reference"] = {"path": REFERENCE_NAME, "sha256": sha256_file(path), "optional": True}
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def run(model_dir: Path, posts: Path | None, synthetic: int) -> int:
    t0 = time.perf_counter()
    settings = Settings(model_dir=model_dir, providers="CPUExecutionProvider", model_variant="int8")
    if posts is not None:
        values = [line for line in posts.read_bytes().splitlines() if line.strip()]
        source = f"{posts.name}: {len(values)} lines"
    else:
        from moderation.models.manifest import file_path, load_manifest
        from moderation.pipeline.tokenize import TextTokenizer

        manifest = load_manifest(model_dir)
        tokenizer = TextTokenizer(file_path(model_dir, manifest, "tokenizer"), manifest.max_length)
        values, source = default_mix(tokenizer, synthetic)
    reference = build_reference(values, source, settings)
    path = write_reference(model_dir, reference)
    summary = {k: reference[k] for k in ("posts", "actions", "escalation_rate", "escalations_by_trigger")}
    print(json.dumps({"written": str(path), **summary, "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0
