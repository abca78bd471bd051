"""Model variants: every one serves the same int8 weights, and none depends on a post's batchmates.

ONNX Runtime's dynamic quantizer (``quantize_dynamic``, what the build runs on the fp32 export) writes
int8 weights per output channel and quantizes activations on the fly with ``DynamicQuantizeLinear``,
which takes **one scale per tensor**: the integers a token gets depend on every other token in the
batch, so a post's scores move with its batchmates (up to 0.26 on real posts). Everything here
rewrites such a graph with ``onnx`` alone (no torch, no retraining, deterministic bytes):

- :func:`rowwise` → the CPU ``int8`` variant: the same int8 weights; each activation row (one token)
  gets its own scale (``QuantizeLinear`` along axis 0 of the flattened activation), so a post's
  scores depend on that post alone. BERT's few outlier channels (|x| 10–30× the rest after some
  LayerNorms) are split into copies (outlier channel splitting: ``x_c`` → ``x_c/α`` in α slots,
  weight rows duplicated exactly), so one channel no longer sets every token's scale.
- :func:`dequantized` → ``fp32``: the weights dequantized exactly, plain float32 MatMul/Gather: the
  reference the int8 variant is measured against, and the source of
- :func:`fp16_from` → ``fp16`` for CUDA: ORT's BERT fusions on the fp32 graph, then fp16 weights and
  activations with fp32 inputs/outputs (a torch fp16 export of BERT is an invalid graph).

A rowwise graph records what it was made from in its ``metadata_props`` (``moderation.rowwise``), so
:func:`dequantized` can undo it: the shipped file is the only model file the repository needs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moderation.core.errors import ModelError

if TYPE_CHECKING:
    import onnx

HIDDEN = 384
HEADS = 12
METADATA_KEY = "moderation.rowwise"
# Rows that are all zero keep a non-zero scale (QuantizeLinear divides by it).
_MIN_SCALE = np.float32(1e-12)
SYMMETRIC = 128  # zero point of activations that are roughly centred (LayerNorm outputs, attention context)
BOUNDED_BELOW = 16  # zero point of activations with a small negative floor (GELU >= -0.17)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(
            "deriving model variants needs the onnx package: pip install 'onnx>=1.16,<2' "
            "(the project's fp16 extra has it)"
        ) from exc
    return onnx


# --------------------------------------------------------------------------------------------------
# Reading the int8 graph
# --------------------------------------------------------------------------------------------------


class _Graph:
    """Producer/consumer index over a graph's nodes and initializers, for rewriting."""

    def __init__(self, model: onnx.ModelProto) -> None:
        onnx = _onnx()
        self.model = model
        self.graph = model.graph
        self.init = {i.name: i for i in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper

    def array(self, name: str) -> np.ndarray:
        if name not in self.init:
            raise ModelError(f"expected {name!r} to be an initializer of the int8 graph")
        return np.asarray(self.numpy_helper.to_array(self.init[name]))

    def only_consumer(self, name: str, op_type: str) -> Any:
        found = self.consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op_type:
            raise ModelError(
                f"unexpected int8 graph: {name!r} feeds {[n.op_type for n in found]}, expected one {op_type} "
                "(not a graph from onnxruntime's quantize_dynamic?)"
            )
        return found[0]


def _matmul_chains(g: _Graph) -> list[dict[str, Any]]:
    """Every ``DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scale)`` chain of quantize_dynamic."""
    chains = []
    for mmi in [n for n in g.graph.node if n.op_type == "MatMulInteger"]:
        dql = g.producer.get(mmi.input[0])
        if dql is None or dql.op_type != "DynamicQuantizeLinear":
            raise ModelError(f"MatMulInteger {mmi.name!r} is not fed by DynamicQuantizeLinear")
        cast = g.only_consumer(mmi.output[0], "Cast")
        mul = g.only_consumer(cast.output[0], "Mul")
        scale_mul = g.producer[mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]]
        if scale_mul.op_type != "Mul":
            raise ModelError(f"scale of {mmi.name!r} is not a Mul of activation and weight scales")
        w_scale = next(i for i in scale_mul.input if i in g.init)
        chains.append(
            {
                "nodes": [dql, mmi, cast, mul, scale_mul], "name": mmi.name, "x": dql.input[0],
                "w_q": mmi.input[1], "w_zp": mmi.input[3] if len(mmi.input) > 3 else "", "w_scale": w_scale,
                "out": mul.output[0],
            }
        )  # fmt: skip
    if not chains:
        raise ModelError(
            "the model has no DynamicQuantizeLinear/MatMulInteger chain: it is not a dynamically quantized int8 "
            "graph (already rowwise? see `moderation models variants`)"
        )
    return chains


def _dequantize_weight(w_q: np.ndarray, zp: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
    w = w_q.astype(np.int32) - (zp.astype(np.int32) if zp is not None else 0)
    return (w * scale.astype(np.float32)).astype(np.float32)


def quantized_activations(model: onnx.ModelProto) -> list[str]:
    """Names of the activations the dynamic int8 graph quantizes (inputs of its MatMuls)."""
    return sorted({chain["x"] for chain in _matmul_chains(_Graph(model))})


# --------------------------------------------------------------------------------------------------
# Calibration: which activations are bounded below, which channels are outliers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationPlan:
    """How one activation is quantized per row."""

    zero_point: int | None = SYMMETRIC  # None: asymmetric per row (exact correction, slower)
    splits: dict[int, int] = field(default_factory=dict)  # channel → copies (a power of two)


Plan = dict[str, ActivationPlan]


def activation_stats(
    fp32: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], activations: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per activation over real posts (padding left out): its minimum and each channel's largest |x|."""
    import onnxruntime as ort

    onnx = _onnx()
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    known = {o.name for o in model.graph.output}
    for name in activations:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    stats: dict[str, dict[str, Any]] = {}
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for name, value in zip(activations, session.run(list(activations), dict(feed)), strict=True):
            rows = value[real] if value.ndim == 3 else value
            top, low = np.abs(rows).max(axis=0), float(rows.min())
            if name in stats:
                stats[name]["absmax"] = np.maximum(stats[name]["absmax"], top)
                stats[name]["min"] = min(stats[name]["min"], low)
            else:
                stats[name] = {"absmax": top, "min": low}
    return stats


def make_plan(
    stats: Mapping[str, Mapping[str, Any]], *, symmetric: bool = True, ratio: float = 3.0, max_copies: int = 32
) -> Plan:
    """Zero point and outlier splits per activation from :func:`activation_stats`.

    A channel whose largest |x| exceeds ``ratio`` × the median channel's is split into the power of
    two copies that bring it under that bound (at most ``max_copies`` extra copies per activation,
    largest channels first). An activation that never goes below −0.25 (GELU) gets zero point 16,
    the others 128; ``symmetric=False``: asymmetric per-row zero points instead (no splits).
    """
    plan: Plan = {}
    for name, s in stats.items():
        if not symmetric:
            plan[name] = ActivationPlan(zero_point=None)
            continue
        absmax = np.asarray(s["absmax"], np.float64)
        bound = ratio * float(np.median(absmax))
        splits: dict[int, int] = {}
        extra = 0
        for c in np.argsort(absmax)[::-1]:
            if absmax[c] <= bound:
                break
            copies = 2 ** math.ceil(math.log2(absmax[c] / bound))
            if extra + copies - 1 > max_copies:
                break
            splits[int(c)] = int(copies)
            extra += copies - 1
        zero_point = BOUNDED_BELOW if s["min"] >= -0.25 else SYMMETRIC
        plan[name] = ActivationPlan(zero_point=zero_point, splits=dict(sorted(splits.items())))
    return plan


# --------------------------------------------------------------------------------------------------
# Rewriting
# --------------------------------------------------------------------------------------------------


def rowwise(model: onnx.ModelProto, plan: Mapping[str, ActivationPlan] | None = None) -> onnx.ModelProto:
    """The dynamic int8 graph with per-row (per-token) activation quantization; weights untouched.

    For an activation ``x`` [..., K], ``x2 = x.reshape(-1, K)`` (outlier channel ``c`` split: ``x2[:, c]``
    scaled by 1/α and α − 1 copies appended, its weight row appended α − 1 times). Per row,
    ``lo = min(0, min x2)`` and ``hi = max(0, max x2)``; with a fixed zero point Z,
    ``s = max(hi / (255 − Z), −lo / Z)``, and ``MatMulIntegerToFloat`` does product, zero point, the
    scales ``s_row × s_w[n]`` and the bias in one kernel. Asymmetric (``zero_point=None``):
    ``s = (hi − lo) / 255``, ``zp = round(−lo / s)`` per row; ORT's integer MatMuls take only a scalar A
    zero point, so the product uses none and ``zp_row × Σ_k (W[k, n] − zp_w[n])`` is subtracted after
    (exact in integers). Nothing a row gets depends on another row.
    """
    g = _Graph(model)
    h, nh = g.helper, g.numpy_helper
    tp = _onnx().TensorProto
    chains = _matmul_chains(g)
    plan = plan or {}
    removed: set[int] = set()
    nodes: list[Any] = []
    inits: list[Any] = [
        nh.from_array(np.array([0.0], np.float32), "rw/zero"),
        nh.from_array(np.array([255.0], np.float32), "rw/255"),
        nh.from_array(np.array([_MIN_SCALE], np.float32), "rw/min_scale"),
        nh.from_array(np.array([0], np.int64), "rw/i0"),
        nh.from_array(np.array([-1], np.int64), "rw/i-1"),
        nh.from_array(np.array([1], np.int64), "rw/axis1"),
    ]
    record: list[dict[str, Any]] = []
    quantized: dict[str, dict[str, Any]] = {}  # activation → its per-row tensors (Q, K and V share them)
    for n, chain in enumerate(chains):
        x, w_q_name = chain["x"], chain["w_q"]
        w_q = g.array(w_q_name)
        k, width = w_q.shape
        removed |= {id(node) for node in chain["nodes"]}
        if x not in quantized:
            quantized[x] = _quantize_rows(g, x, k, plan.get(x, ActivationPlan()), f"rw/{len(quantized)}/", nodes, inits)
        t, m = quantized[x], f"rw/mm{n}/"
        split_rows = t["split_channels"]
        w_name = w_q_name
        if split_rows:
            w_name = m + "w_split"
            inits.append(nh.from_array(np.concatenate([w_q, w_q[split_rows]], axis=0), w_name))
        w_zp = [chain["w_zp"]] if chain["w_zp"] else []
        out = chain["out"]
        if t["zero_point"] is not None:
            # No bias input: ORT 1.32 adds it wrongly when A's scale is per row (measured); the graph's own
            # Add(bias) after this MatMul stays.
            mm_inputs = [t["q"], w_name, t["s_col"], chain["w_scale"], t["zp_scalar"], *w_zp]
            nodes.append(h.make_node("MatMulIntegerToFloat", mm_inputs, [m + "y2"], domain="com.microsoft"))
        else:
            zp_w = g.array(chain["w_zp"]).astype(np.int32) if chain["w_zp"] else np.zeros(width, np.int32)
            inits.append(nh.from_array((w_q.astype(np.int32) - zp_w).sum(axis=0).astype(np.float32), m + "colsum"))
            nodes += [
                h.make_node("MatMulInteger", [t["q"], w_name, "", *w_zp], [m + "acc"]),
                h.make_node("Cast", [m + "acc"], [m + "acc_f"], to=tp.FLOAT),
                h.make_node("Mul", [t["zp_col"], m + "colsum"], [m + "corr"]),
                h.make_node("Sub", [m + "acc_f", m + "corr"], [m + "centred"]),
                h.make_node("Mul", [t["s_col"], chain["w_scale"]], [m + "scale"]),
                h.make_node("Mul", [m + "centred", m + "scale"], [m + "y2"]),
            ]
        inits.append(nh.from_array(np.array([width], np.int64), m + "width"))
        nodes += [
            h.make_node("Concat", [t["lead"], m + "width"], [m + "out_shape"], axis=0),
            h.make_node("Reshape", [m + "y2", m + "out_shape"], [out]),
        ]
        record.append(
            {"x": x, "out": out, "w": w_name, "k": int(k), "w_scale": chain["w_scale"], "w_zp": chain["w_zp"]}
        )
    if not any(o.domain == "com.microsoft" for o in g.model.opset_import):
        g.model.opset_import.append(h.make_opsetid("com.microsoft", 1))
    meta = {
        "matmuls": record,
        "plan": {name: asdict(p) for name, p in sorted(plan.items())},
    }
    h.set_model_props(g.model, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return _finish(g, removed, nodes, inits, "rowwise")


def _quantize_rows(
    g: _Graph, x: str, k: int, plan: ActivationPlan, p: str, nodes: list[Any], inits: list[Any]
) -> dict[str, Any]:
    """Nodes that flatten ``x``, split its outlier channels and quantize each row; their names."""
    h, nh = g.helper, g.numpy_helper
    tp = _onnx().TensorProto
    split = {c: n for c, n in plan.splits.items() if n > 1}
    inits.append(nh.from_array(np.array([-1, k], np.int64), p + "flat_shape"))
    nodes.append(h.make_node("Reshape", [x, p + "flat_shape"], [p + "x_flat"]))
    x2 = p + "x_flat"
    copies = [c for c, n in split.items() for _ in range(n - 1)]
    if copies:
        inverse = np.ones(k, np.float32)
        for c, n in split.items():
            inverse[c] = 1.0 / n  # a power of two: exact
        inits += [nh.from_array(inverse, p + "split_scale"), nh.from_array(np.array(copies, np.int64), p + "copies")]
        nodes += [
            h.make_node("Mul", [x2, p + "split_scale"], [p + "x_scaled"]),
            h.make_node("Gather", [p + "x_scaled", p + "copies"], [p + "x_copies"], axis=1),
            h.make_node("Concat", [p + "x_scaled", p + "x_copies"], [p + "x_split"], axis=1),
        ]
        x2 = p + "x_split"
    nodes += [
        h.make_node("ReduceMax", [x2], [p + "max"], axes=[1], keepdims=0),
        h.make_node("ReduceMin", [x2], [p + "min"], axes=[1], keepdims=0),
        h.make_node("Max", [p + "max", "rw/zero"], [p + "hi"]),
        h.make_node("Min", [p + "min", "rw/zero"], [p + "lo"]),
        h.make_node("Neg", [p + "lo"], [p + "neg_lo"]),
    ]
    names: dict[str, Any] = {"zero_point": plan.zero_point, "split_channels": copies}
    if plan.zero_point is None:
        nodes += [
            h.make_node("Sub", [p + "hi", p + "lo"], [p + "range"]),
            h.make_node("Div", [p + "range", "rw/255"], [p + "s_raw"]),
            h.make_node("Max", [p + "s_raw", "rw/min_scale"], [p + "s"]),
            h.make_node("Div", [p + "neg_lo", p + "s"], [p + "zp_raw"]),
            h.make_node("Round", [p + "zp_raw"], [p + "zp_f"]),
            h.make_node("Cast", [p + "zp_f"], [p + "zp"], to=tp.UINT8),
            h.make_node("Unsqueeze", [p + "zp_f", "rw/axis1"], [p + "zp_col"]),
        ]
        names["zp_col"] = p + "zp_col"
    else:
        z = plan.zero_point
        if not 0 < z < 255:
            raise ModelError(f"zero point {z} for {x!r} must be within 1..254")
        inits += [
            nh.from_array(np.array([255 - z], np.float32), p + "up_levels"),
            nh.from_array(np.array([z], np.float32), p + "down_levels"),
            nh.from_array(np.array(z, np.uint8), p + "zp_scalar"),
        ]
        nodes += [
            h.make_node("Div", [p + "hi", p + "up_levels"], [p + "s_up"]),
            h.make_node("Div", [p + "neg_lo", p + "down_levels"], [p + "s_down"]),
            h.make_node("Max", [p + "s_up", p + "s_down", "rw/min_scale"], [p + "s"]),
            h.make_node("Shape", [p + "s"], [p + "rows"]),
            h.make_node("Expand", [p + "zp_scalar", p + "rows"], [p + "zp"]),
        ]
        names["zp_scalar"] = p + "zp_scalar"
    nodes += [
        h.make_node("QuantizeLinear", [x2, p + "s", p + "zp"], [p + "q"], axis=0),
        h.make_node("Unsqueeze", [p + "s", "rw/axis1"], [p + "s_col"]),
        h.make_node("Shape", [x], [p + "shape"]),
        h.make_node("Slice", [p + "shape", "rw/i0", "rw/i-1"], [p + "lead"]),
    ]
    names.update(q=p + "q", s_col=p + "s_col", lead=p + "lead")
    return names


def rowwise_metadata(model: onnx.ModelProto) -> dict[str, Any] | None:
    """What :func:`rowwise` recorded in a graph (None for any other graph)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return dict(json.loads(prop.value))
    return None


def dequantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """A dynamic or rowwise int8 graph with its weights dequantized exactly: float32 MatMul and Gather."""
    g = _Graph(model)
    nh, h = g.numpy_helper, g.helper
    removed: set[int] = set()
    nodes: list[Any] = []
    inits: list[Any] = []
    meta = rowwise_metadata(model)
    if meta is None:
        for n, chain in enumerate(_matmul_chains(g)):
            zp = g.array(chain["w_zp"]) if chain["w_zp"] else None
            weight = _dequantize_weight(g.array(chain["w_q"]), zp, g.array(chain["w_scale"]))
            inits.append(nh.from_array(weight, f"dq/w{n}"))
            nodes.append(h.make_node("MatMul", [chain["x"], f"dq/w{n}"], [chain["out"]]))
            removed |= {id(node) for node in chain["nodes"]}
    else:
        for n, mm in enumerate(meta["matmuls"]):
            w_q = g.array(mm["w"])[: mm["k"]]  # the rows after k are the outlier copies
            zp = g.array(mm["w_zp"]) if mm["w_zp"] else None
            inits.append(nh.from_array(_dequantize_weight(w_q, zp, g.array(mm["w_scale"])), f"dq/w{n}"))
            removed.add(id(g.producer[mm["out"]]))
            nodes.append(h.make_node("MatMul", [mm["x"], f"dq/w{n}"], [mm["out"]]))
        for i, prop in enumerate(model.metadata_props):
            if prop.key == METADATA_KEY:
                del model.metadata_props[i]
                break
    # Embeddings: DequantizeLinear(Gather(table_q, ids)) == Gather(dequantized table, ids).
    for dq in [n for n in g.graph.node if n.op_type == "DequantizeLinear"]:
        gather = g.producer.get(dq.input[0])
        if gather is None or gather.op_type != "Gather" or gather.input[0] not in g.init:
            continue
        zp = g.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        name = gather.input[0] + "_dequantized"
        inits.append(nh.from_array(_dequantize_weight(g.array(gather.input[0]), zp, g.array(dq.input[1])), name))
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        nodes.append(h.make_node("Gather", [name, gather.input[1]], [dq.output[0]], axis=axis))
        removed |= {id(dq), id(gather)}
    if any(n.op_type in ("DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear") for n in nodes):
        raise ModelError("dequantized graph still holds quantization nodes")
    return _finish(g, removed, nodes, inits, "dequantized")


def _finish(g: _Graph, removed: set[int], new_nodes: list[Any], new_inits: list[Any], tag: str) -> onnx.ModelProto:
    """Swap nodes, drop what no output needs any more, order topologically, check."""
    onnx = _onnx()
    kept = [n for n in g.graph.node if id(n) not in removed]
    del g.graph.node[:]
    g.graph.node.extend(kept + new_nodes)
    g.graph.initializer.extend(new_inits)
    _prune(g.graph)
    _toposort(g.graph)
    g.model.producer_name, g.model.producer_version = "moderation.models.variants", tag
    onnx.checker.check_model(g.model)
    return g.model


def _prune(graph: Any) -> None:
    """Remove nodes none of whose outputs is used, then initializers nothing reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for i in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(i)


def _toposort(graph: Any) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ModelError("derived graph has a cycle or a dangling input")
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def fp16_from(fp32_path: Path, dst: Path) -> Path:
    """The CUDA variant: ORT's BERT fusions on the fp32 graph, then fp16 with fp32 inputs/outputs."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:  # pragma: no cover - part of every onnxruntime wheel
        raise ModelError("onnxruntime.transformers is missing from this onnxruntime install") from exc
    # opt_level 0: the Python fusions only. Level ≥ 1 first runs an ORT session pass whose helper imports
    # torch, which the serving install (and a GPU image) does not have; ORT applies its own graph
    # optimisations again when the session is created.
    try:
        optimized = optimize_model(
            str(fp32_path), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, opt_level=0, use_gpu=True
        )
    except ImportError as exc:
        raise ModelError(f"deriving fp16 needs onnx and sympy ({exc}): pip install -e '.[fp16]'") from exc
    optimized.convert_float_to_float16(keep_io_types=True)
    save(optimized.model, dst)
    return dst


def save(model: onnx.ModelProto, dst: Path) -> str:
    """Write ``model`` (deterministic bytes) atomically; returns its sha256."""
    data = model.SerializeToString(deterministic=True)
    tmp = dst.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(dst)
    return hashlib.sha256(data).hexdigest()


def derive(src: Path, dst: Path, transform: Callable[[onnx.ModelProto], onnx.ModelProto]) -> str:
    """Apply ``transform`` to the model at ``src``, write it to ``dst``; returns its sha256."""
    return save(transform(_onnx().load(str(src))), dst)
