"""The GPU benchmark script runs end to end in its CPU dry-run mode: probe, engine, workers through Kafka."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from moderation.devtools.bench.cli import run as bench_run

pytestmark = pytest.mark.kafka


def test_dry_run_probes_measures_the_engine_and_workers_through_the_broker(
    kafka_bootstrap: str, tiny_worker_env: None, tmp_path: Path
) -> None:
    out = tmp_path / "gpu-dry.json"
    args = argparse.Namespace(
        target="gpu", out=str(out), seconds=0.05, batch_sizes="1,8", variants=None, posts=200, processes="1,2",
        dry_run=True, quick=False,
    )
    assert bench_run(args) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    probe = result["probe"]
    assert probe["python"] and "CPUExecutionProvider" in probe["onnxruntime_providers"] and "java" in probe
    assert {c["batch_size"] for c in result["engine_alone"]} == {1, 8}
    rows = result["end_to_end_workers"]["rows"]
    assert [r["processes"] for r in rows] == [1, 2]
    assert all(r["decided"] == r["posts"] == 200 and r["posts_per_s"] > 0 for r in rows)
    assert result["end_to_end_workers"]["env"]["MODERATION_PROVIDERS"] == "CPUExecutionProvider"
