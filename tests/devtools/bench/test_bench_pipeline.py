"""``moderation bench pipeline --quick`` end to end on the real broker with the tiny model."""

import argparse
import json
import math
from pathlib import Path

import pytest

from moderation.devtools.bench import pipeline
from moderation.devtools.bench.cli import run as bench_run
from moderation.pipeline.dedupe import text_key
from moderation.pipeline.tokenize import TextTokenizer


def test_sustained_rate_counts_posts_after_the_first_decision():
    # 1 post at t=0 (start of the window), 10 more over the next 2 s → 5 posts/s
    rate, window = pipeline.sustained_rate([1000] + [1000 + 200 * i for i in range(1, 11)])
    assert window == pytest.approx(2.0) and rate == pytest.approx(5.0)
    # a first batch decided in the same millisecond is part of the window's start, not of its rate
    rate, _ = pipeline.sustained_rate([0, 0, 0, 500, 1000])
    assert rate == pytest.approx(2.0)
    assert math.isnan(pipeline.sustained_rate([5])[0])


def test_posts_are_distinct_after_normalisation(tiny_model_dir: Path):
    tokenizer = TextTokenizer(tiny_model_dir / "tokenizer.json", 128)
    texts = pipeline.distinct_posts(tokenizer, 3000)  # more than the tiny vocabulary gives distinct posts
    assert len(texts) == 3000
    assert len({text_key(t) for t in texts}) == 3000


def test_quick_run_measures_both_workers_through_kafka(tiny_worker_env: None, tmp_path: Path):
    out = tmp_path / "BENCH.md"
    args = argparse.Namespace(
        target="pipeline", out=str(out), seconds=None, batch_sizes=None, variants=None, posts=None, quick=True
    )
    assert bench_run(args) == 0

    result = json.loads((tmp_path / "bench-results" / "pipeline.json").read_text())
    tput = {t["worker"]: t for t in result["throughput"]}
    assert set(tput) == {"shipped", "naive"}
    for t in tput.values():
        assert t["posts"] == pipeline.QUICK_POSTS
        assert t["decided"] == t["posts"]  # every pre-filled post got its decision record
        assert t["posts_per_s"] > 0 and t["window_s"] > 0
    assert tput["shipped"]["max_batch"] == 64 and tput["naive"]["max_batch"] is None
    assert result["ratio"] == pytest.approx(tput["shipped"]["posts_per_s"] / tput["naive"]["posts_per_s"])

    lat = {x["worker"]: x for x in result["latency"]}
    assert set(lat) == {"shipped", "naive"}
    for x in lat.values():
        assert x["decided"] == x["posts"] > 0 and x["rate"] == result["latency_rate"]
        assert 0 < x["p50_ms"] <= x["p99_ms"] <= x["max_ms"]

    sweep = {t["max_batch"]: t for t in result["sweep"]}
    assert set(sweep) == set(pipeline.QUICK_BATCHES)
    assert sweep[64] == tput["shipped"]  # the default batch size is the (a) run, not measured twice
    assert all(t["decided"] == t["posts"] for t in sweep.values())

    assert (tmp_path / "bench-results" / "throughput_vs_batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.read_text()
    assert "| worker | sustained posts/s |" in md and "](bench-results/throughput_vs_batch.png)" in md
    assert f"{result['ratio']:.1f}×" in md and "moderation bench pipeline --quick" in md
    assert result["machine"]["cpu_count"] and result["machine"]["onnxruntime"]
    assert set(result["engine_alone"]) == {"batch_1_posts_per_s", "batch_64_posts_per_s"}
    assert all(v > 0 for v in result["engine_alone"].values()) and "the engine alone" in md


def test_rewriting_benchmarks_keeps_the_sections_other_commands_measured(tmp_path) -> None:
    from moderation.devtools.bench.pipeline import KEEP_MARKER, kept_sections

    out = tmp_path / "BENCHMARKS.md"
    assert kept_sections(out) == ""
    out.write_text(f"# old pipeline table\n\n{KEEP_MARKER}\n## Engine alone\n| 1 | 299 |\n", encoding="utf-8")
    assert kept_sections(out) == f"\n{KEEP_MARKER}\n## Engine alone\n| 1 | 299 |\n"
    out.write_text("# no marker\n", encoding="utf-8")
    assert kept_sections(out) == ""
