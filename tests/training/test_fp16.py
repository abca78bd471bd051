"""The CUDA variant is derived from fp32 and must score like it (keep_io_types: same feeds, same outputs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from moderation.core.errors import ModelError
from moderation.pipeline.infer import CPU, OnnxEngine
from moderation.training.fp16 import convert

TEXTS = ["hello world", "you are an idiot", "free crypto giveaway, click the link now!!!", "match report: 2-1"]


def test_fp16_scores_like_fp32(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    out = convert(model_dir)
    assert out == model_dir / "model.fp16.onnx" and out.stat().st_size > 0
    fp32 = OnnxEngine(model_dir, variant="fp32", providers=(CPU,)).score_arrays(TEXTS)
    fp16 = OnnxEngine(model_dir, variant="fp16", providers=(CPU,)).score_arrays(TEXTS)
    for task in fp32:
        assert fp16[task].dtype == np.float32
        np.testing.assert_allclose(fp16[task], fp32[task], atol=2e-2)


def test_fp16_without_fp32_says_how_to_get_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.fp32.onnx").unlink()
    with pytest.raises(ModelError, match="make models"):
        convert(model_dir)
