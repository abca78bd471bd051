"""``moderation bench gpu``: what a GPU machine gives, in one short run that writes JSON.

1. **Probe**: what the machine has (Python, onnxruntime and its providers, torch and its CUDA libraries, the NVIDIA
   driver, CUDA libraries, Java and the cached Kafka jars), recorded first so a failed run still says why.
2. **Engine**: the fp16 engine alone on CUDA, batch size (1 … 4096) × length bucket × IOBinding on/off
   on pre-tokenized inputs (the GPU's numbers, not the tokenizer's), plus texts → scores per batch size
   on the realistic mixed workload.
3. **End to end** (``--processes 1,2``): real ``moderation worker`` processes with the fp16 model on CUDA
   (``MODERATION_REQUIRE_PROVIDER``: a silent CPU fallback fails the run) through a local broker, on a
   pre-filled topic; sustained posts/s per process count.

It refuses to run without a working CUDA provider rather than quietly timing the CPU. ``--dry-run``
runs every step on the CPU (int8, small sizes) so the script is known to work end to end before a GPU
machine's scarce minutes are spent on it; its numbers are not GPU numbers and say so.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
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
from moderation.core.settings import Settings, load_settings
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


def synthetic_batch(
    batch_size: int, bucket: int, vocab_size: int, rng: np.random.Generator, cls_id: int = 101, sep_id: int = 102
) -> Batch:
    """Full-length rows of random ordinary token ids: the worst case for a bucket."""
    low = min(1000, vocab_size // 2)  # past BERT's special and unused ids (a test model's vocabulary is tiny)
    ids = rng.integers(low, vocab_size, size=(batch_size, bucket), dtype=np.int64)
    ids[:, 0], ids[:, -1] = cls_id, sep_id  # [CLS] … [SEP], as the tokenizer emits
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


def _command(cmd: list[str]) -> str | None:
    """First line of a tool's answer, or None when it is not there (or fails)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def settings_cache_dir() -> Path:
    return Path(os.environ.get("MODERATION_CACHE_DIR", Path.home() / ".cache" / "moderation"))


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_library_dirs() -> list[str]:
    """The ``lib`` folders of the pip-installed NVIDIA runtime packages (``nvidia-cuda-runtime-cu12`` …,
    as torch's wheels bring them): what onnxruntime-gpu needs on ``LD_LIBRARY_PATH`` when the machine has
    no system CUDA. Found without importing anything (``deploy/tools/gpu-bench.sh`` exports them)."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    return sorted(str(lib) for root in roots for lib in Path(root).glob("*/lib") if lib.is_dir())


def probe() -> dict[str, Any]:
    """What this machine has, for the report (and to say why a real run cannot start)."""
    import onnxruntime as ort

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "nvidia_smi": _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
        "java": _command(["java", "-version"]),
        "torch": _installed_version("torch"),  # reported, never imported: only its CUDA libraries matter here
        "nvidia_cuda_libraries": nvidia_library_dirs(),
    }
    libs = _command(["sh", "-c", "ldconfig -p | grep -Eo 'lib(cudart|cublas|cudnn)[^ ]*' | sort -u | tr '\\n' ' '"])
    facts["cuda_libraries"] = libs.split() if libs else []
    kafka_cache = settings_cache_dir() / "kafka"
    facts["kafka_jars_cached"] = sorted(p.parent.name for p in kafka_cache.glob("*/libs"))  # Kafka versions
    return facts


def run(args: argparse.Namespace) -> int:
    dry = bool(getattr(args, "dry_run", False))
    console = Console()
    facts = probe()
    console.print(f"[bold]probe[/]: {json.dumps(facts)}")
    if not dry:
        require_cuda()
    else:
        console.print("[yellow]dry run on the CPU: every step runs, but these are not GPU numbers[/]")
    settings = load_settings()
    seconds = float(args.seconds or (0.2 if dry else 1.0))
    out = Path(args.out) if args.out else DEFAULT_OUT
    default_sizes = (1, 64) if dry else BATCH_SIZES
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else default_sizes
    variant = (args.variants or ("int8" if dry else "fp16")).split(",")[0]
    if dry:
        engine = OnnxEngine.from_settings(settings, variant=variant, providers=[CPU])
    else:
        engine = OnnxEngine.from_settings(settings, variant=variant, providers=[CUDA, CPU], require_provider=CUDA)
    vocabulary = engine.tokenizer.vocabulary()
    vocab_size = len(vocabulary)
    cls_id, sep_id = vocabulary.get("[CLS]", 0), vocabulary.get("[SEP]", 0)
    rng = np.random.default_rng(0)

    cells: list[GpuCell] = []
    end_to_end: list[dict[str, Any]] = []
    mixed, source = workloads(engine.tokenizer, max(batch_sizes) * 2, seed=7)["mixed"]
    total = len(engine.tokenizer.buckets) * len(batch_sizes) * 2 + len(batch_sizes)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)
        for bucket in engine.tokenizer.buckets:
            for bs in batch_sizes:
                batch = synthetic_batch(bs, bucket, vocab_size, rng, cls_id, sep_id)
                for binding in (False,) if dry else (False, True):
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
        "dry_run": dry,
        "probe": facts,
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
            off, on = by_key[(bucket, bs, False)], by_key.get((bucket, bs, True))
            cell = f"{off.posts_per_s:,.0f} ({off.p99_ms:.1f})"
            row.append(cell + (f" / {on.posts_per_s:,.0f} ({on.p99_ms:.1f})" if on else ""))
        table.add_row(*row)
    console.print(table)
    for e2e in end_to_end:
        console.print(
            f"end to end (tokenize + run), batch {e2e['batch_size']}: {e2e['posts_per_s']:,.0f} posts/s, "
            f"p99 {e2e['p99_ms']:.1f} ms"
        )
    processes = tuple(int(p) for p in args.processes.split(",")) if getattr(args, "processes", None) else ()
    if processes:
        del engine  # the workers load their own sessions
        n = int(args.posts or (2_000 if dry else 200_000))
        max_batch = 64 if dry else 1024
        worker_env = {"MODERATION_MODEL_VARIANT": variant}
        if dry:
            worker_env["MODERATION_PROVIDERS"] = CPU
        else:
            worker_env.update({"MODERATION_PROVIDERS": f"{CUDA},{CPU}", "MODERATION_REQUIRE_PROVIDER": CUDA})
        rows = end_to_end_workers(settings, console, worker_env, n, max_batch, processes)
        result["end_to_end_workers"] = {"posts": n, "max_batch": max_batch, "env": worker_env, "rows": rows}
        for measured in rows:
            console.print(
                f"workers end to end, {measured['processes']} process(es): {measured['posts_per_s']:,.0f} posts/s"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return 0


def end_to_end_workers(
    settings: Settings,
    console: Console,
    worker_env: dict[str, str],
    n: int,
    max_batch: int,
    processes: tuple[int, ...],
) -> list[dict[str, Any]]:
    """Sustained posts/s of real worker processes (the given model variant and providers) through a local
    broker, for each process count; the same measurement as ``make bench``'s shipped worker."""
    import asyncio

    from moderation.devtools.bench.pipeline import SHIPPED, Bench, bench_session, distinct_posts

    tokenizer = OnnxEngine.from_settings(settings, providers=[CPU]).tokenizer
    texts = distinct_posts(tokenizer, n)

    async def measure(bench: Bench) -> list[dict[str, Any]]:
        return [asdict(await bench.throughput(SHIPPED, max_batch, n, processes=p)) for p in processes]

    with bench_session(settings, console, texts, extra_env=worker_env) as bench:
        return asyncio.run(measure(bench))
