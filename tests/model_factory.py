"""A tiny but real model artifact directory that follows the serving contract exactly.

Real ONNX graph (embedding Gather → masked mean → per-task MatMul heads → temperature → sigmoid /
softmax), a real ``tokenizers`` JSON trained on a few sentences, a real dynamic-int8 quantization of
the fp32 graph and a manifest with real sha256s. Small enough to build in well under a second, so
tests of the engine, the worker and the pipeline run against ONNX Runtime itself instead of a fake.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

TOXICITY_LABELS = ("toxic", "insult", "threat")
SPAM_LABELS = ("ham", "spam")
CATEGORY_LABELS = ("news", "sports", "tech", "other")

SENTENCES = (
    "you are an idiot and everyone hates you",
    "i will hurt you if you come back here",
    "what a lovely day for a walk in the park",
    "click here to win a free prize now limited offer",
    "buy cheap followers visit my site now",
    "the team won the match in the final minute",
    "the new phone has a faster chip and better camera",
    "parliament passed the budget after a long debate",
    "thanks for sharing this, really helpful",
    "stupid worthless trash, shut up",
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_tokenizer(path: Path, max_length: int = 128) -> Tokenizer:
    """WordLevel tokenizer with BERT-style [CLS] … [SEP] and, like all-MiniLM's, fixed padding on."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.enable_truncation(max_length=max_length)
    # The engine must undo this: the shipped all-MiniLM tokenizer.json pads everything to 128.
    tok.enable_padding(length=max_length, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    tok.save(str(path))
    return tok


def _head(
    name: str, pooled: str, rng: np.random.Generator, dim: int, labels: Sequence[str], temperature: np.ndarray
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    n = len(labels)
    weight = numpy_helper.from_array((rng.standard_normal((dim, n)) * 1.5).astype(np.float32), f"{name}_w")
    bias = numpy_helper.from_array((rng.standard_normal(n) * 0.2).astype(np.float32), f"{name}_b")
    temp = numpy_helper.from_array(temperature.astype(np.float32), f"{name}_t")
    act = (
        helper.make_node("Sigmoid", [f"{name}_scaled"], [name])
        if name == "toxicity"
        else helper.make_node("Softmax", [f"{name}_scaled"], [name], axis=-1)
    )
    nodes = [
        helper.make_node("MatMul", [pooled, f"{name}_w"], [f"{name}_mm"]),
        helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_logits"]),
        helper.make_node("Div", [f"{name}_logits", f"{name}_t"], [f"{name}_scaled"]),
        act,
    ]
    return nodes, [weight, bias, temp]


def build_graph(vocab_size: int, dim: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Embedding → masked mean pooling → tanh projection → three calibrated heads."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab_size, dim)).astype(np.float32), "embedding"),
        numpy_helper.from_array((rng.standard_normal((dim, dim)) * 0.5).astype(np.float32), "proj_w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["emb"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count_raw"], keepdims=0),
        helper.make_node("Max", ["count_raw", "one"], ["count"]),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "proj_w"], ["proj"]),
        helper.make_node("Tanh", ["proj"], ["pooled"]),
    ]
    temperatures = {
        "toxicity": np.linspace(0.8, 1.4, len(TOXICITY_LABELS)),
        "spam": np.array([1.1]),
        "category": np.array([0.9]),
    }
    labels = {"toxicity": TOXICITY_LABELS, "spam": SPAM_LABELS, "category": CATEGORY_LABELS}
    outputs = []
    for task, task_labels in labels.items():
        head_nodes, head_inits = _head(task, "pooled", rng, dim, task_labels, temperatures[task])
        nodes += head_nodes
        inits += head_inits
        outputs.append(helper.make_tensor_value_info(task, TensorProto.FLOAT, ["batch", len(task_labels)]))
    graph = helper.make_graph(
        nodes,
        "tiny-moderation",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def build_tiny_model(out_dir: Path, *, max_length: int = 128, seed: int = 0, int8: bool = True) -> Path:
    """Write a complete artifact directory (manifest, tokenizer, fp32 and int8 ONNX) and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir / "tokenizer.json", max_length)
    fp32 = out_dir / "model.fp32.onnx"
    onnx.save(build_graph(tok.get_vocab_size(), seed=seed), str(fp32))
    files: dict[str, dict[str, str]] = {
        "fp32": {"path": fp32.name, "sha256": _sha256(fp32)},
        "fp16": {"path": "model.fp16.onnx", "derived_from": "fp32"},
        "tokenizer": {"path": "tokenizer.json", "sha256": _sha256(out_dir / "tokenizer.json")},
    }
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = out_dir / "model.int8.onnx"
        quantize_dynamic(fp32, int8_path, weight_type=QuantType.QInt8)
        files["int8"] = {"path": int8_path.name, "sha256": _sha256(int8_path)}
    manifest = {
        "name": "tiny-moderation",
        "version": "0.0.1-test",
        "base_model": "none (test fixture)",
        "max_length": max_length,
        "text_preparation": {"emoji_to_words": True},  # as every model since 2.0.0
        "tokenizer": "tokenizer.json",
        "files": files,
        "tasks": {
            "toxicity": {
                "kind": "multilabel",
                "output": "toxicity",
                "labels": list(TOXICITY_LABELS),
                "temperature": [round(float(t), 4) for t in np.linspace(0.8, 1.4, len(TOXICITY_LABELS))],
            },
            "spam": {"kind": "multiclass", "output": "spam", "labels": list(SPAM_LABELS), "temperature": 1.1},
            "category": {
                "kind": "multiclass",
                "output": "category",
                "labels": list(CATEGORY_LABELS),
                "temperature": 0.9,
            },
        },
        "default_thresholds": {
            "toxicity.toxic": {"review": 0.5, "block": 0.9},
            "spam.spam": {"review": 0.6, "block": 0.95},
        },
        "metrics": {},
        "data_sources": [],
        "built_at": "1970-01-01T00:00:00Z",
        "build_command": "tests/model_factory.py build_tiny_model",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir
