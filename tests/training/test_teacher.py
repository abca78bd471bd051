"""Reading a teacher's weights back from an exported BERT graph (onnx, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from moderation.training.teacher import TEACHERS, state_from_onnx  # noqa: E402


def _graph(path: Path, extra_add: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """x @ W + b, as torch exports ``nn.Linear``: W anonymous and stored [in, out]."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([0.5, 1.0, 1.5], dtype=np.float32)
    inits = [numpy_helper.from_array(w, "onnx::MatMul_17"),
             numpy_helper.from_array(b, "encoder.layer.0.attention.self.query.bias"),
             numpy_helper.from_array(np.ones(3, np.float32), "embeddings.LayerNorm.weight")]
    nodes = [helper.make_node("MatMul", ["x", "onnx::MatMul_17"], ["xw"], name="mm"),
             helper.make_node("Add", ["encoder.layer.0.attention.self.query.bias", "xw"], ["y"])]
    if extra_add:
        inits.append(numpy_helper.from_array(b, "encoder.layer.0.attention.self.key.bias"))
        nodes.append(helper.make_node("Add", ["xw", "encoder.layer.0.attention.self.key.bias"], ["y2"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits,
    )
    onnx.save(helper.make_model(graph), str(path))
    return w, b


def test_anonymous_matmul_weights_are_named_after_their_bias_and_transposed(tmp_path: Path) -> None:
    w, b = _graph(tmp_path / "m.onnx")
    state = state_from_onnx(tmp_path / "m.onnx")
    assert set(state) == {"encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.bias",
                          "embeddings.LayerNorm.weight"}
    assert np.array_equal(state["encoder.layer.0.attention.self.query.weight"], w.T)  # nn.Linear: [out, in]
    assert np.array_equal(state["encoder.layer.0.attention.self.query.bias"], b)


def test_an_ambiguous_graph_is_refused(tmp_path: Path) -> None:
    _graph(tmp_path / "m.onnx", extra_add=True)
    with pytest.raises(ValueError, match="cannot name the weight"):
        state_from_onnx(tmp_path / "m.onnx")


def test_teachers_are_pinned_maven_artifacts() -> None:
    for spec in TEACHERS.values():
        group, artifact, version = spec.artifact.split(":")
        assert group == "dev.langchain4j" and artifact.startswith("langchain4j-embeddings-") and version == "0.36.2"
        assert len(spec.jar_sha256) == 64
