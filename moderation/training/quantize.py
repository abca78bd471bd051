"""``moderation models quantize`` and ``moderation models derive``: the served variants from one int8 file.

``quantize`` (build time, needs the data sets for calibration) turns the dynamically quantized int8
graph that ``quantize_dynamic`` writes into the served per-row variant (:func:`variants.rowwise`):
outlier channels and zero points are calibrated on validation-split posts, weights stay as they
are. ``derive`` (no torch, no data: the ``fp16`` extra's onnx + sympy) makes fp32 and the CUDA fp16
variant from the shipped int8 file alone and checks each against the digest the manifest records,
so a GPU image built from a fresh clone serves exactly the weights the model card describes.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import time
from pathlib import Path
from typing import Any

from moderation.core.errors import ModelError
from moderation.models import variants as V
from moderation.models.manifest import MANIFEST_NAME, load_manifest, sha256_file, verify_file

CALIBRATION_TEXTS = 1024
CALIBRATION_SEED = 2026
SPLIT_RATIO = 2.0
MAX_COPIES = 64
DERIVED = ("fp32", "fp16")


def _versions() -> dict[str, str]:
    return {pkg: importlib.metadata.version(pkg) for pkg in ("onnx", "onnxruntime")}


def _write_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    path = model_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_manifest(model_dir)  # still valid


def calibration_texts(data_dir: Path, n: int = CALIBRATION_TEXTS, seed: int = CALIBRATION_SEED) -> list[str]:
    """``n`` posts of the validation split (never test), the mix the build calibrates temperatures on."""
    from moderation.training import data as D

    texts = sorted({e.text for e in D.training_mix(D.load_corpus(data_dir), "val")})
    random.Random(seed).shuffle(texts)
    return texts[:n]


def quantize(
    data_dir: Path,
    model_dir: Path,
    source: Path | None = None,
    *,
    version: str | None = None,
    ratio: float = SPLIT_RATIO,
    max_copies: int = MAX_COPIES,
) -> dict[str, Any]:
    """Write the per-row int8 variant (and its fp32) into ``model_dir`` from the dynamic int8 ``source``."""
    onnx = V._onnx()
    from moderation.pipeline.tokenize import TextTokenizer, pad_batch

    manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    int8_path = model_dir / manifest["files"]["int8"]["path"]
    source = source or int8_path
    dynamic = onnx.load(str(source))
    if V.rowwise_metadata(dynamic) is not None:
        raise ModelError(
            f"{source} is already a per-row graph; pass --source the dynamically quantized int8 file "
            "(what the build's quantize_dynamic writes, or `git show <commit>:<path>` of an older release)"
        )
    started = time.perf_counter()
    fp32 = V.dequantized(onnx.load(str(source)))
    texts = calibration_texts(data_dir)
    tokenizer = TextTokenizer(
        model_dir / manifest["files"]["tokenizer"]["path"], int(manifest.get("max_length", 128)), (16, 32, 64, 128),
        emoji_to_words=bool(manifest.get("text_preparation", {}).get("emoji_to_words", False)),
    )  # fmt: skip
    feeds = []
    for i in range(0, len(texts), 64):
        batch = pad_batch(tokenizer.token_ids(texts[i : i + 64]), tokenizer.buckets, tokenizer.pad_id)
        feeds.append({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
    stats = V.activation_stats(fp32, feeds, V.quantized_activations(dynamic))
    plan = V.make_plan(stats, ratio=ratio, max_copies=max_copies)
    source_sha = sha256_file(source)
    int8_sha = V.save(V.rowwise(dynamic, plan), int8_path)
    files = manifest["files"]
    fp32_entry = files.get("fp32", {})
    fp32_path = model_dir / fp32_entry.get("path", "model.fp32.onnx")
    if fp32_path.is_file() and not fp32_entry.get("derived_from"):
        # the build's own export (trained weights before int8): kept as the reference of the trained model;
        # files.fp32 becomes the int8 weights dequantized, which a clone can derive
        export = model_dir / "model.fp32.export.onnx"
        fp32_path.replace(export)
        files["fp32_export"] = {"path": export.name, "sha256": sha256_file(export), "optional": True}
    files["int8"] = {"path": int8_path.name, "sha256": int8_sha}
    manifest["quantization"] = {
        "weights": "int8 per output channel (onnxruntime quantize_dynamic), unchanged",
        "activations": "uint8 per row (token), scale from the row's own range: independent of batchmates; "
        f"zero point {V.SYMMETRIC}, {V.BOUNDED_BELOW} for activations bounded below (GELU)",
        "outlier_channel_splits": {
            "ratio": ratio, "max_copies": max_copies,
            "channels": sum(len(p.splits) for p in plan.values()),
            "copies": sum(n - 1 for p in plan.values() for n in p.splits.values()),
        },
        "calibration": {"texts": len(texts), "split": "val", "seed": CALIBRATION_SEED},
        "from": {"file": source.name, "sha256": source_sha},
        "tool": {"module": "moderation.models.variants", **_versions()},
    }  # fmt: skip
    if version:
        manifest["version"] = version
    _write_manifest(model_dir, manifest)
    derived = derive(model_dir, ("fp32",), record=True)
    return {"int8": int8_sha, **derived, "seconds": round(time.perf_counter() - started, 1), "plan": plan}


def derive(model_dir: Path, which: tuple[str, ...] = DERIVED, *, record: bool = False) -> dict[str, str]:
    """fp32 (dequantized int8) and/or fp16 (from that fp32) next to the shipped int8 file.

    Each result is checked against the digest the manifest records; ``record`` writes the new digests
    instead (release time). A mismatch means other onnx/onnxruntime versions than the recorded ones.
    """
    manifest_model = load_manifest(model_dir)
    src = verify_file(model_dir, manifest_model, "int8")
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    files = manifest["files"]
    fp32_path = model_dir / files.get("fp32", {}).get("path", "model.fp32.onnx")
    fp16_path = model_dir / files.get("fp16", {}).get("path", "model.fp16.onnx")
    wanted = set(which)
    if "fp16" in wanted:
        wanted.add("fp32")
    made: dict[str, str] = {}
    if "fp32" in wanted:
        made["fp32"] = V.derive(src, fp32_path, V.dequantized)
    if "fp16" in wanted:
        V.fp16_from(fp32_path, fp16_path)
        made["fp16"] = sha256_file(fp16_path)
    versions = _versions()
    for key, digest in made.items():
        path = fp32_path if key == "fp32" else fp16_path
        entry = files.get(key, {})
        if not record and entry.get("sha256") and entry["sha256"] != digest:
            was = entry.get("derived_with", {})
            raise ModelError(
                f"derived {key} ({path.name}) has sha256 {digest[:12]}…, the manifest records {entry['sha256'][:12]}… "
                f"(derived with {was or 'unknown versions'}; this is {versions}): install those versions "
                "(pip install 'onnx==X' 'onnxruntime==Y') and derive again, or re-record with "
                "`moderation models derive --record` and re-run `moderation models eval`"
            )
        files[key] = {
            "path": path.name, "sha256": digest, "derived_from": "int8" if key == "fp32" else "fp32",
            "optional": True, "derived_with": versions,
        }  # fmt: skip
    if record:
        _write_manifest(model_dir, manifest)
    return made
