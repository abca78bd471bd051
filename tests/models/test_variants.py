"""Variants derived from an int8 graph: per-row int8 (batch-independent), fp32 and fp16 from it alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from moderation.core.errors import ModelError
from moderation.models import variants as V
from moderation.models.manifest import MANIFEST_NAME, sha256_file
from moderation.pipeline.infer import CPU, OnnxEngine
from moderation.pipeline.tokenize import pad_batch
from moderation.training.quantize import derive

TEXTS = [
    "hello world", "you are an idiot", "free crypto giveaway, click the link now!!!", "match report: 2-1",
    "the market fell today", "what a lovely day", "click here to win", "idiot idiot idiot", "a", "news at ten",
]  # fmt: skip


def _rowwise_dir(tiny_model_dir: Path, tmp_path: Path, plan: V.Plan | None = None) -> Path:
    """A copy of the tiny model whose int8 file is the per-row variant (calibrated on TEXTS)."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    int8 = model_dir / "model.int8.onnx"
    dynamic = onnx.load(str(int8))
    if plan is None:
        engine = OnnxEngine(tiny_model_dir, variant="fp32", providers=(CPU,))
        batch = pad_batch(engine.tokenizer.token_ids(TEXTS), engine.tokenizer.buckets, engine.tokenizer.pad_id)
        feeds = [{"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}]
        stats = V.activation_stats(V.dequantized(onnx.load(str(int8))), feeds, V.quantized_activations(dynamic))
        plan = V.make_plan(stats, ratio=1.5)
    V.save(V.rowwise(dynamic, plan), int8)
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    manifest["files"]["int8"]["sha256"] = sha256_file(int8)
    manifest["files"].pop("fp32")  # the rowwise file is all a clone has; fp32 is derived
    (model_dir / "model.fp32.onnx").unlink()
    (model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    return model_dir


def _score_in_batches(engine: OnnxEngine, texts: list[str], size: int) -> dict[str, np.ndarray]:
    parts = [engine.score_arrays(texts[i : i + size]) for i in range(0, len(texts), size)]
    return {task: np.concatenate([p[task] for p in parts]) for task in parts[0]}


def test_rowwise_scores_do_not_depend_on_batchmates(tiny_model_dir: Path, tmp_path: Path) -> None:
    rowwise = OnnxEngine(_rowwise_dir(tiny_model_dir, tmp_path), variant="int8", providers=(CPU,))
    dynamic = OnnxEngine(tiny_model_dir, variant="int8", providers=(CPU,))
    alone = _score_in_batches(rowwise, TEXTS, 1)
    noise = [f"{t} {t} and a much longer neighbour with other words in it" for t in TEXTS] * 5
    mixed = rowwise.score_arrays(noise[:17] + TEXTS + noise[17:])
    for size in (3, 7, 64):
        batched = _score_in_batches(rowwise, TEXTS, size)
        for task in alone:
            assert np.abs(batched[task] - alone[task]).max() <= 1e-5
    for task in alone:
        assert np.abs(mixed[task][17 : 17 + len(TEXTS)] - alone[task]).max() <= 1e-5
    # the graph it came from is batch-dependent: the property is the rewrite's, not the tiny model's
    dyn_alone, dyn_mixed = _score_in_batches(dynamic, TEXTS, 1), dynamic.score_arrays(noise[:17] + TEXTS)
    assert max(np.abs(dyn_mixed[t][17:] - dyn_alone[t]).max() for t in dyn_alone) > 1e-4


def test_rowwise_is_closer_to_fp32_than_dynamic_int8(tiny_model_dir: Path, tmp_path: Path) -> None:
    fp32 = OnnxEngine(tiny_model_dir, variant="fp32", providers=(CPU,)).score_arrays(TEXTS)
    dynamic = OnnxEngine(tiny_model_dir, variant="int8", providers=(CPU,)).score_arrays(TEXTS)
    rowwise = OnnxEngine(_rowwise_dir(tiny_model_dir, tmp_path), variant="int8", providers=(CPU,)).score_arrays(TEXTS)
    pairs = [("dyn", dynamic), ("row", rowwise)]
    err = {name: max(float(np.abs(p[t] - fp32[t]).max()) for t in fp32) for name, p in pairs}
    assert err["row"] < err["dyn"], err
    assert err["row"] < 0.02, err


def test_asymmetric_rows_and_splits_are_exact_algebra(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Asymmetric per-row zero points (corrected after the integer MatMul) score like the symmetric plan."""
    dynamic = onnx.load(str(tiny_model_dir / "model.int8.onnx"))
    names = V.quantized_activations(dynamic)
    asym = {n: V.ActivationPlan(zero_point=None) for n in names}
    split = {n: V.ActivationPlan(zero_point=128, splits={0: 4, 3: 2}) for n in names}
    fp32 = OnnxEngine(tiny_model_dir, variant="fp32", providers=(CPU,)).score_arrays(TEXTS)
    for i, plan in enumerate((asym, split)):
        engine = OnnxEngine(_rowwise_dir(tiny_model_dir, tmp_path / str(i), plan), variant="int8", providers=(CPU,))
        scores = engine.score_arrays(TEXTS)
        assert max(float(np.abs(scores[t] - fp32[t]).max()) for t in fp32) < 0.02


def test_derived_fp32_and_fp16_come_from_the_int8_file_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _rowwise_dir(tiny_model_dir, tmp_path)
    made = derive(model_dir, ("fp32", "fp16"), record=True)
    assert set(made) == {"fp32", "fp16"}
    fp32 = onnx.load(str(model_dir / "model.fp32.onnx"))
    onnx.checker.check_model(fp32)
    assert not {n.op_type for n in fp32.graph.node} & {"MatMulInteger", "MatMulIntegerToFloat", "QuantizeLinear"}
    assert [i.name for i in fp32.graph.input] == ["input_ids", "attention_mask"]
    scores = {
        v: OnnxEngine(model_dir, variant=v, providers=(CPU,)).score_arrays(TEXTS) for v in ("int8", "fp32", "fp16")
    }
    original = OnnxEngine(tiny_model_dir, variant="int8", providers=(CPU,))
    for task in scores["fp32"]:
        assert scores["fp16"][task].dtype == np.float32
        np.testing.assert_allclose(scores["fp16"][task], scores["fp32"][task], atol=2e-2)
        np.testing.assert_allclose(scores["int8"][task], scores["fp32"][task], atol=2e-2)
    # the same weights as the dynamic graph: dequantizing either gives the same model
    dq_dynamic = V.dequantized(onnx.load(str(tiny_model_dir / "model.int8.onnx")))
    V.save(dq_dynamic, tmp_path / "dq.onnx")
    assert original.manifest.name
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "dq.onnx"), providers=[CPU])
    engine = OnnxEngine(model_dir, variant="fp32", providers=(CPU,))
    batch = pad_batch(engine.tokenizer.token_ids(TEXTS), engine.tokenizer.buckets, engine.tokenizer.pad_id)
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    for mine, theirs in zip(engine.session.run(None, feeds), session.run(None, feeds), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_derive_checks_the_recorded_digest(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _rowwise_dir(tiny_model_dir, tmp_path)
    derive(model_dir, ("fp32",), record=True)
    recorded = json.loads((model_dir / MANIFEST_NAME).read_text())["files"]["fp32"]
    assert recorded["sha256"] == sha256_file(model_dir / "model.fp32.onnx")
    assert recorded["derived_with"]["onnxruntime"]
    assert derive(model_dir, ("fp32",)) == {"fp32": recorded["sha256"]}  # deterministic bytes
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    manifest["files"]["fp32"]["sha256"] = "0" * 64
    (model_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="install those versions"):
        derive(model_dir, ("fp32",))


def test_rowwise_refuses_a_graph_without_dynamic_quantization(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a dynamically quantized int8 graph"):
        V.rowwise(onnx.load(str(tiny_model_dir / "model.fp32.onnx")))
