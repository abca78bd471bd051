"""``moderation bench hotpath``: the worker's ceiling without the model, for finding and removing costs.

Runs the real worker with the free scorer (:mod:`moderation.devtools.bench.free`; ``--model``: with the
real model instead, to check a change does not cost the CPU worker) on a pre-filled topic,
for each ``--processes`` × ``--batch-sizes`` combination, and reports sustained posts/s end to end
through the broker (first to last decision record). ``make bench`` reports the same measurement next to
the real model's; this target is the quick loop for optimising one cost at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from moderation.core.errors import ConfigError
from moderation.core.settings import load_settings
from moderation.devtools.bench.pipeline import (
    DEFAULT_FREE_POSTS,
    FREE,
    FREE_BATCH,
    SHIPPED,
    Bench,
    Throughput,
    bench_session,
    distinct_posts,
    machine,
)
from moderation.pipeline.infer import OnnxEngine


def _ints(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip()) if text else default


async def measure(
    bench: Bench,
    n: int,
    batches: tuple[int, ...],
    processes: tuple[int, ...],
    baseline: Path | None,
    rounds: int,
    kind: str = FREE,
    compare_env: dict[str, str] | None = None,
) -> list[Throughput]:
    """Every combination, ``rounds`` times; with a baseline checkout, baseline and current alternate so that
    both see the same machine (load from other processes drifts over minutes)."""
    out: list[Throughput] = []
    for _ in range(rounds):
        for p in processes:
            for b in batches:
                if baseline is not None:
                    out.append(await bench.throughput(kind, b, n, processes=p, source=baseline, code="baseline"))
                out.append(await bench.throughput(kind, b, n, processes=p))
                if compare_env:
                    label = ",".join(f"{k}={v}" for k, v in compare_env.items())
                    out.append(await bench.throughput(kind, b, n, processes=p, code=label, env=compare_env))
    return out


def run(args: argparse.Namespace) -> int:
    n = int(args.posts or DEFAULT_FREE_POSTS)
    batches = _ints(args.batch_sizes, (FREE_BATCH,))
    processes = _ints(getattr(args, "processes", None), (1,))
    baseline = Path(args.baseline).resolve() if getattr(args, "baseline", None) else None
    rounds = int(getattr(args, "rounds", None) or 1)
    kind = SHIPPED if getattr(args, "model", False) else FREE
    pairs = (getattr(args, "compare_env", None) or "").split(",")
    compare_env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    if baseline is not None and not (baseline / "moderation" / "devtools" / "bench" / "free.py").is_file():
        raise ConfigError(f"--baseline {baseline}: not a checkout of this project with the free-scorer worker")
    if n < 10 or min(batches) < 1 or min(processes) < 1:
        raise ConfigError("need --posts ≥ 10, batch sizes ≥ 1 and --processes ≥ 1")
    console = Console()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings = load_settings()
    engine = OnnxEngine.from_settings(settings)  # only for the tokenizer's vocabulary and the machine facts
    env = machine(settings, engine)
    texts = distinct_posts(engine.tokenizer, n)
    del engine
    with bench_session(settings, console, texts) as bench:
        results = asyncio.run(measure(bench, n, batches, processes, baseline, rounds, kind, compare_env))
    what = "Real model" if kind == SHIPPED else "Free scorer"
    table = Table(title=f"{what}, end to end through Kafka ({n} posts per run, commit {env['git_commit']})")
    for col in ("code", "processes", "max_batch", "posts/s", "decided", "duplicates"):
        table.add_column(col, justify="right")
    for t in results:
        table.add_row(
            t.code,
            str(t.processes),
            str(t.max_batch),
            f"{t.posts_per_s:,.0f}",
            f"{t.decided}/{t.posts}",
            str(t.duplicates),
        )
    console.print(table)
    out: dict[str, Any] = {
        "machine": env,
        "posts_per_run": n,
        "baseline": str(baseline) if baseline else None,
        "results": [asdict(t) for t in results],
    }
    path = Path(args.out or "bench-results/hotpath.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")
    return 0
