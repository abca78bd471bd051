"""The CUDA variant from a fresh clone: derived from the committed int8 file alone, no torch, no training."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from moderation.models.manifest import sha256_file
from moderation.pipeline.infer import CPU, OnnxEngine

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = Path("moderation/models/artifacts/moderation-minilm")
TEXTS = [
    "Shut up you worthless idiot, nobody wants to hear your garbage opinions.",
    "FREE bitcoin giveaway!!! click the link now",
    "Had a lovely walk in the park with my kids this afternoon.",
    "The central bank raised interest rates again on Thursday.",
]


def test_fresh_clone_derives_the_recorded_fp16_model(tmp_path: Path) -> None:
    assert importlib.util.find_spec("torch") is None or os.environ.get("CI") != "true"  # serving install in CI
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    model_dir = clone / ARTIFACT
    assert not (model_dir / "model.fp32.onnx").exists() and not (model_dir / "model.fp16.onnx").exists()
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run(
        [sys.executable, "-m", "moderation.cli", "models", "derive", "--variants", "fp16", "--out", str(model_dir)],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "matches the manifest" in out.stdout
    manifest = json.loads((model_dir / "manifest.json").read_text())
    fp16 = model_dir / "model.fp16.onnx"
    assert sha256_file(fp16) == manifest["files"]["fp16"]["sha256"]
    graph = onnx.load(str(fp16))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert {o.name for o in graph.graph.output} == {spec["output"] for spec in manifest["tasks"].values()}
    assert {"Attention", "SkipLayerNormalization"} <= {n.op_type for n in graph.graph.node}  # fused for CUDA
    # fp16 runs on the CPU provider too: it scores like the served int8 variant
    scores = {v: OnnxEngine(model_dir, variant=v, providers=(CPU,)).score_arrays(TEXTS) for v in ("int8", "fp16")}
    for task in scores["int8"]:
        assert np.abs(scores["fp16"][task] - scores["int8"][task]).max() < 0.03
