"""``moderation bench gpu``: the fp16 engine alone on CUDA (onnxruntime-gpu).

Sweeps batch size (1 … 4096) × length bucket × IOBinding on/off on pre-tokenized inputs, so the
numbers are the GPU's and not the tokenizer's, plus one end-to-end row (texts → scores) per batch
size on the realistic mixed workload. Refuses to run without a working CUDA provider rather than
quietly timing the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from moderation.core.errors import ProviderError
from moderation.core.settings import load_settings
from moderation.devtools.bench.workload import length_profile, workloads
from moderation.pipeline.infer import CPU, CUDA, OnnxEngine
from moderation.pipeline.tokenize import Batch

BATCH_SIZES = (1, 8, 32, 128, 512, 1024, 2048, 4096)
DEFAULT_OUT = Path("reports/bench_gpu.json")


@dataclass(frozen=True)
class GpuCell:
    bucket: int
    batch_size: int
    iobinding: bool
    posts_per_s: float
    p50_ms: float
    p99_ms: float
    runs: int


def require_cuda() -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA not in available:
        raise ProviderError(
            f"no CUDA provider: this onnxruntime ({ort.__version__}) offers {available}. Run the GPU "
            "benchmark on a machine with an NVIDIA GPU after `pip install '.[gpu]' && pip uninstall -y "
            "onnxruntime` (see README); `moderation bench engine` measures the CPU engine"
        )


def synthetic_batch(batch_size: int, bucket: int, vocab_size: int, rng: np.random.Generator) -> Batch:
    """Full-length rows of random ordinary token ids: the worst case for a bucket."""
    ids = rng.integers(1000, vocab_size, size=(batch_size, bucket), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] … [SEP], as the BERT tokenizer emits
    return Batch(ids, np.ones((batch_size, bucket), dtype=np.int64))


def time_runs(fn: Any, seconds: float, min_runs: int = 5) -> tuple[list[float], float]:
    for _ in range(2):
        fn()
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < min_runs:
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    require_cuda()
    console = Console()
    settings = load_settings()
    seconds = float(args.seconds or 1.0)
    out = Path(args.out) if args.out else DEFAULT_OUT
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else BATCH_SIZES
    variant = (args.variants or "fp16").split(",")[0]
    engine = OnnxEngine.from_settings(settings, variant=variant, providers=[CUDA, CPU], require_provider=CUDA)
    vocab_size = len(engine.tokenizer.vocabulary())
    rng = np.random.default_rng(0)

    cells: list[GpuCell] = []
    end_to_end: list[dict[str, Any]] = []
    mixed, source = workloads(engine.tokenizer, max(batch_sizes) * 2, seed=7)["mixed"]
    total = len(engine.tokenizer.buckets) * len(batch_sizes) * 2 + len(batch_sizes)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)
        for bucket in engine.tokenizer.buckets:
            for bs in batch_sizes:
                batch = synthetic_batch(bs, bucket, vocab_size, rng)
                for binding in (False, True):
                    progress.update(task, description=f"bucket {bucket} batch {bs} iobinding={binding}")
                    lat, wall = time_runs(lambda b=batch, io=binding: engine.run_batch(b, iobinding=io), seconds)
                    cells.append(
                        GpuCell(
                            bucket=bucket,
                            batch_size=bs,
                            iobinding=binding,
                            posts_per_s=bs * len(lat) / wall,
                            p50_ms=float(np.percentile(lat, 50) * 1000),
                            p99_ms=float(np.percentile(lat, 99) * 1000),
                            runs=len(lat),
                        )
                    )
                    progress.advance(task)
        for bs in batch_sizes:
            progress.update(task, description=f"end to end, batch {bs}")
            texts = mixed[:bs]
            lat, wall = time_runs(lambda t=texts: engine.score_arrays(t), seconds)
            end_to_end.append(
                {
                    "batch_size": bs,
                    "posts_per_s": bs * len(lat) / wall,
                    "p50_ms": float(np.percentile(lat, 50) * 1000),
                    "p99_ms": float(np.percentile(lat, 99) * 1000),
                }
            )
            progress.advance(task)

    import onnxruntime as ort

    result = {
        "environment": {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "onnxruntime": ort.__version__,
            "engine": engine.info(),
            "seconds_per_cell": seconds,
        },
        "engine_alone": [asdict(c) for c in cells],
        "end_to_end_mixed": {
            "workload": length_profile(engine.tokenizer, mixed) | {"source": source},
            "rows": end_to_end,
        },
    }
    table = Table(title=f"GPU engine alone ({variant}, {engine.provider}): posts/s (p99 ms), IOBinding off / on")
    table.add_column("batch", justify="right")
    for bucket in engine.tokenizer.buckets:
        table.add_column(f"seq {bucket}", justify="right")
    by_key = {(c.bucket, c.batch_size, c.iobinding): c for c in cells}
    for bs in batch_sizes:
        row = [str(bs)]
        for bucket in engine.tokenizer.buckets:
            off, on = by_key[(bucket, bs, False)], by_key[(bucket, bs, True)]
            row.append(f"{off.posts_per_s:,.0f} ({off.p99_ms:.1f}) / {on.posts_per_s:,.0f} ({on.p99_ms:.1f})")
        table.add_row(*row)
    console.print(table)
    for e2e in end_to_end:
        console.print(
            f"end to end (tokenize + run), batch {e2e['batch_size']}: {e2e['posts_per_s']:,.0f} posts/s, "
            f"p99 {e2e['p99_ms']:.1f} ms"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return 0
