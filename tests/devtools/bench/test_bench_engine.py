import argparse
import json
from pathlib import Path

import onnxruntime as ort
import pytest

from moderation.core.errors import ProviderError
from moderation.devtools.bench import workload
from moderation.devtools.bench.cli import run as bench_run
from moderation.devtools.bench.engine import measure
from moderation.pipeline.tokenize import TextTokenizer


def _args(**kw: object) -> argparse.Namespace:
    base = {"target": "engine", "out": None, "seconds": None, "batch_sizes": None, "variants": None}
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> TextTokenizer:
    return TextTokenizer(tiny_model_dir / "tokenizer.json", 128)


def test_synthetic_posts_are_reproducible_and_within_bounds(tokenizer):
    words = workload.vocabulary_words(tokenizer)
    assert "[PAD]" not in words and all(w.isalpha() and w.islower() for w in words)
    posts = workload.synthesize(words, 300, seed=3)
    assert posts == workload.synthesize(words, 300, seed=3)
    counts = [len(p.split()) for p in posts]
    assert min(counts) >= 3 and max(counts) <= 91  # 90 words + an optional URL
    assert len(set(posts)) > 250


def test_workloads_short_is_capped_at_64_tokens(tokenizer, monkeypatch, tmp_path):
    monkeypatch.setattr(workload, "DEMO_DATA_DIR", tmp_path)  # no demo sample
    named = workload.workloads(tokenizer, 200, seed=1)
    assert set(named) == {"short", "mixed"}
    short, _ = named["short"]
    assert len(short) == 200 and max(len(ids) for ids in tokenizer.token_ids(short)) <= 64
    profile = workload.length_profile(tokenizer, named["mixed"][0])
    assert profile["posts"] == 200 and sum(profile["bucket_share"].values()) == pytest.approx(1.0, abs=0.01)


def test_demo_sample_skips_broken_lines(tmp_path, monkeypatch, tokenizer):
    (tmp_path / "posts.jsonl").write_bytes(
        b'{"id": "1", "text": "hello there"}\n'
        b"\xff\xfe not utf8\n"
        b"{not json\n"
        b'{"id": "2", "text": ""}\n'
        b'["a list"]\n'
        b'{"id": "3", "text": "the team won"}\n'
    )
    assert workload.sample_texts(tmp_path) == ["hello there", "the team won"]
    monkeypatch.setattr(workload, "DEMO_DATA_DIR", tmp_path)
    assert workload.sample_texts() == ["hello there", "the team won"]
    demo, source = workload.workloads(tokenizer, 10)["demo"]
    assert set(demo) == {"hello there", "the team won"} and "2 valid posts" in source


def test_measure_counts_every_post():
    seen: list[int] = []
    latencies, wall, posts = measure(lambda batch: seen.append(len(batch)), ["a", "b", "c", "d", "e"], 2, 0.0)
    assert len(latencies) == 10 and posts == 20 and wall > 0
    assert seen[3:] == [2] * 10  # after 3 warm-up calls, always full batches (wrapping around)


def test_bench_engine_writes_results(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MODERATION_MODEL_DIR", str(tiny_model_dir))
    out = tmp_path / "bench.json"
    assert bench_run(_args(out=str(out), seconds=0.01, batch_sizes="1,8")) == 0
    result = json.loads(out.read_text())
    cells = result["results"]
    assert {(c["variant"], c["batch_size"]) for c in cells} >= {("int8", 1), ("int8", 8), ("fp32", 1), ("fp32", 8)}
    assert {c["workload"] for c in cells} >= {"short", "mixed"}
    assert all(c["posts_per_s"] > 0 and c["p99_ms"] >= c["p50_ms"] > 0 and c["batches"] >= 10 for c in cells)
    assert result["environment"]["model"]["name"] == "tiny-moderation"
    assert result["environment"]["provider"] == "CPUExecutionProvider"
    quality = result["quality"]
    assert set(quality["int8_vs_fp32"]) == {"toxicity", "spam", "category"}
    assert all(0 <= v < 1 for v in quality["int8_batchmate_drift_max_abs"].values())


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_bench_gpu_refuses_without_cuda(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MODERATION_MODEL_DIR", str(tiny_model_dir))
    with pytest.raises(ProviderError, match=r"no CUDA provider: .*onnxruntime-gpu|no CUDA provider: .*\[gpu\]"):
        bench_run(_args(target="gpu"))
