"""``moderation bench {engine,gpu,pipeline,hotpath,faults,soak}``: dispatch to the benchmark modules."""

from __future__ import annotations

import argparse

from moderation.core.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    if args.target == "engine":
        from moderation.devtools.bench.engine import run as run_engine

        return run_engine(args)
    if args.target == "gpu":
        from moderation.devtools.bench.gpu import run as run_gpu

        return run_gpu(args)
    if args.target == "pipeline":
        try:
            from moderation.devtools.bench.pipeline import run as run_pipeline
        except ModuleNotFoundError as exc:
            if exc.name != "moderation.devtools.bench.pipeline":
                raise
            raise ConfigError(
                "the end-to-end pipeline benchmark (moderation/devtools/bench/pipeline.py) is not written yet; "
                "`moderation bench engine` measures the inference engine alone"
            ) from None
        return run_pipeline(args)
    if args.target == "hotpath":
        from moderation.devtools.bench.hotpath import run as run_hotpath

        return run_hotpath(args)
    if args.target == "faults":
        from moderation.devtools.bench.faults import run as run_faults

        return run_faults(args)
    if args.target == "soak":
        from moderation.devtools.bench.soak import run as run_soak

        return run_soak(args)
    raise ConfigError(f"unknown benchmark target {args.target!r}: use engine, gpu, pipeline, faults or soak")
