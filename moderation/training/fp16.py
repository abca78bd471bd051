"""``moderation models fp16``: the CUDA variant, derived from the fp32 export.

A torch fp16 export of BERT is an invalid graph (LayerNormalization fp16/fp32 mismatch), so the fp16
file is made the way ONNX Runtime recommends: fuse the fp32 graph with the transformer optimizer
(Attention, SkipLayerNormalization, Gelu fusions for CUDA), then convert weights and activations to
fp16 while keeping the graph's inputs and outputs as they were (int64 ids in, float32 scores out), so
the engine feeds and reads the same arrays for every variant.
"""

from __future__ import annotations

from pathlib import Path

from moderation.core.errors import ModelError
from moderation.models.manifest import file_path, load_manifest, verify_file

HIDDEN = 384
HEADS = 12


def convert(model_dir: Path) -> Path:
    """Write the manifest's fp16 file next to the fp32 one; returns its path."""
    manifest = load_manifest(model_dir)
    if "fp16" not in manifest.files:
        raise ModelError(f"the manifest in {model_dir} lists no fp16 file; rebuild with `moderation models build`")
    if "fp32" not in manifest.files or not file_path(model_dir, manifest, "fp32").is_file():
        raise ModelError(
            f"fp16 is derived from the fp32 export, which is not in {model_dir} (it is not shipped in the "
            "repository for size): rebuild it with `make models` (train extra), then run `moderation models fp16`"
        )
    src = verify_file(model_dir, manifest, "fp32")
    dst = file_path(model_dir, manifest, "fp16")
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:  # pragma: no cover - part of every onnxruntime wheel
        raise ModelError("onnxruntime.transformers is missing from this onnxruntime install") from exc

    # opt_level 0: the Python fusions only. Level ≥ 1 first runs an ORT session pass whose helper imports
    # torch, which the serving install (and a GPU image) does not have; ORT applies its own graph
    # optimisations again when the session is created.
    try:
        optimized = optimize_model(
            str(src), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, opt_level=0, use_gpu=True
        )
    except ImportError as exc:
        raise ModelError(
            f"`models fp16` needs onnx and sympy ({exc}); install the fp16 extra: pip install -e '.[fp16]'"
        ) from exc

    optimized.convert_float_to_float16(keep_io_types=True)
    tmp = dst.with_suffix(".tmp")
    optimized.save_model_to_file(str(tmp))
    tmp.replace(dst)
    return dst
