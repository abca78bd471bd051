"""``moderation bench engine``: the CPU engine alone, int8 against the fp32 reference.

Measures what a worker's inference thread does per micro-batch — tokenize, pad to the length
bucket, run ONNX Runtime — for batch sizes 1/8/32/128 on two workloads (short posts of at most 64
tokens, and the full realistic length mix), for int8 and fp32 in the same run so the speed-up is a
ratio on the same machine in the same state. It also reports how far int8 scores are from fp32 and
how much a post's int8 scores move with its batchmates (dynamic quantization is per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from moderation.core.settings import Settings, load_settings
from moderation.devtools.bench.workload import length_profile, workloads
from moderation.models.manifest import has_file, load_manifest
from moderation.pipeline.infer import CPU, OnnxEngine

BATCH_SIZES = (1, 8, 32, 128)
VARIANTS = ("int8", "fp32")
POOL = 2048  # distinct posts per workload: more than one pass of the largest batch, cheap to build
DEFAULT_OUT = Path("reports/bench_engine.json")


@dataclass(frozen=True)
class Cell:
    variant: str
    workload: str
    batch_size: int
    posts_per_s: float
    p50_ms: float
    p99_ms: float
    batches: int
    seconds: float


def measure(
    run: Callable[[Sequence[str]], object], texts: Sequence[str], batch_size: int, seconds: float
) -> tuple[list[float], float, int]:
    """Run consecutive batches for ``seconds`` (at least 10 batches); latencies (s), wall time, posts."""
    for i in range(3):  # warm-up: first runs of a shape allocate
        run(texts[i * batch_size % len(texts) :][:batch_size] or texts[:batch_size])
    latencies: list[float] = []
    posts, start, offset = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or len(latencies) < 10:
        batch = texts[offset : offset + batch_size]
        if len(batch) < batch_size:
            offset, batch = 0, texts[:batch_size]
        offset += batch_size
        t0 = time.perf_counter()
        run(batch)
        latencies.append(time.perf_counter() - t0)
        posts += len(batch)
    return latencies, time.perf_counter() - start, posts


def quality(int8: OnnxEngine, fp32: OnnxEngine, texts: Sequence[str]) -> dict[str, Any]:
    """int8-vs-fp32 agreement and int8 batch-composition drift (max/mean absolute probability gap)."""
    texts = list(texts[:256])
    a, b = int8.score_arrays(texts), fp32.score_arrays(texts)
    agreement = {
        task: {"max_abs": float(np.abs(a[task] - b[task]).max()), "mean_abs": float(np.abs(a[task] - b[task]).mean())}
        for task in a
    }
    alone = [int8.score_arrays([t]) for t in texts[:64]]
    batched = int8.score_arrays(texts[:64])  # same posts, scored together
    drift = {
        task: float(max(np.abs(batched[task][i] - alone[i][task][0]).max() for i in range(len(alone))))
        for task in batched
    }
    return {"int8_vs_fp32": agreement, "int8_batchmate_drift_max_abs": drift}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(settings: Settings, engine: OnnxEngine) -> dict[str, Any]:
    import onnxruntime as ort

    load1, load5, _ = os.getloadavg()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_5m_before": [round(load1, 2), round(load5, 2)],
        "onnxruntime": ort.__version__,
        "provider": engine.provider,
        "intra_op_threads": settings.intra_op_threads or "auto",
        "model": {"name": engine.manifest.name, "version": engine.manifest.version, "dir": str(engine.model_dir)},
        "buckets": list(engine.tokenizer.buckets),
        "timing": "engine.score_arrays per batch: tokenize + bucket padding + ORT run",
    }


def _table(cells: Sequence[Cell], workload: str, profile: dict[str, Any]) -> Table:
    table = Table(
        title=f"engine, {workload} posts (tokens p50 {profile['tokens_p50']}, p90 {profile['tokens_p90']}, "
        f"max {profile['tokens_max']})"
    )
    for col in ("batch", "int8 posts/s", "int8 p50 ms", "int8 p99 ms", "fp32 posts/s", "fp32 p99 ms", "int8/fp32"):
        table.add_column(col, justify="right")
    by_key = {(c.variant, c.batch_size): c for c in cells if c.workload == workload}
    for bs in sorted({c.batch_size for c in cells}):
        q, f = by_key.get(("int8", bs)), by_key.get(("fp32", bs))
        table.add_row(
            str(bs),
            f"{q.posts_per_s:,.0f}" if q else "-",
            f"{q.p50_ms:.1f}" if q else "-",
            f"{q.p99_ms:.1f}" if q else "-",
            f"{f.posts_per_s:,.0f}" if f else "-",
            f"{f.p99_ms:.1f}" if f else "-",
            f"{q.posts_per_s / f.posts_per_s:.2f}x" if q and f else "-",
        )
    return table


def run(args: argparse.Namespace) -> int:
    console = Console()
    settings = load_settings()
    seconds = float(args.seconds or 2.0)
    out = Path(args.out) if args.out else DEFAULT_OUT
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else BATCH_SIZES
    if args.variants:
        variants = tuple(args.variants.split(","))
    else:
        manifest = load_manifest(settings.model_dir)
        variants = tuple(v for v in VARIANTS if has_file(settings.model_dir, manifest, v))
        if "fp32" not in variants:
            console.print(
                "[yellow]fp32 is not shipped in the repository (size): measuring int8 alone. Derive it from "
                "the int8 file (`moderation models derive --variants fp32`, seconds) to compare int8 with fp32 in "
                "the same run.[/yellow]"
            )

    engines = {
        v: OnnxEngine.from_settings(settings, variant=v, providers=[CPU], require_provider=CPU) for v in variants
    }
    first = engines[variants[0]]
    env = environment(settings, first)
    if env["load_avg_1m_5m_before"][0] > 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]warning: load average {env['load_avg_1m_5m_before'][0]} before the run — another "
            "process is using the CPU, so these numbers understate the engine.[/yellow]"
        )
    posts = workloads(first.tokenizer, POOL, seed=7)
    profiles = {name: {**length_profile(first.tokenizer, texts), "source": src} for name, (texts, src) in posts.items()}

    cells: list[Cell] = []
    total = len(engines) * len(posts) * len(batch_sizes)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)
        for name, (texts, _) in posts.items():
            for variant, engine in engines.items():
                for bs in batch_sizes:
                    progress.update(task, description=f"{variant} {name} batch {bs}")
                    lat, wall, done = measure(engine.score_arrays, texts, bs, seconds)
                    cells.append(
                        Cell(
                            variant=variant,
                            workload=name,
                            batch_size=bs,
                            posts_per_s=done / wall,
                            p50_ms=float(np.percentile(lat, 50) * 1000),
                            p99_ms=float(np.percentile(lat, 99) * 1000),
                            batches=len(lat),
                            seconds=wall,
                        )
                    )
                    progress.advance(task)

    load1, load5, _ = os.getloadavg()
    env["load_avg_1m_5m_after"] = [round(load1, 2), round(load5, 2)]
    result: dict[str, Any] = {
        "environment": env,
        "workloads": profiles,
        "seconds_per_cell": seconds,
        "results": [asdict(c) for c in cells],
    }
    if "int8" in engines and "fp32" in engines:
        result["quality"] = quality(engines["int8"], engines["fp32"], posts["mixed"][0])

    for name in posts:
        console.print(_table(cells, name, profiles[name]))
        console.print(f"  posts: {profiles[name]['source']}; share per length bucket: {profiles[name]['bucket_share']}")
    if "quality" in result:
        console.print(f"quality: {json.dumps(result['quality'], indent=None)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return 0
