"""``moderation models {build,eval,verify,info,quantize,derive,fp16,reference,feedback,loso,bands}``.

``build`` needs torch (the ``train`` extra) and imports it only when called; everything else here
runs on the serving install.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from moderation.core.errors import ConfigError, ModelError
from moderation.core.settings import DEFAULT_MODEL_DIR

TRAIN_EXTRA_HINT = "install the train extra: pip install -e '.[train]'"


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else DEFAULT_MODEL_DIR


def _build(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:  # checked without importing it (slow, and not ours to load)
        raise ConfigError(f"`models build` needs torch, which is not installed; {TRAIN_EXTRA_HINT}")
    from moderation.training.build import build

    feedback = Path(args.feedback) if getattr(args, "feedback", None) else None
    if feedback is not None and not feedback.is_file():  # before torch starts loading for minutes
        raise ConfigError(f"--feedback {feedback}: no such file; export one with `moderation models feedback`")
    teacher = getattr(args, "teacher", "e5-small-v2")
    accurate = Path(args.accurate_out) if getattr(args, "accurate_out", None) else None
    return build(Path(args.data_dir), _out_dir(args), quick=bool(args.quick), feedback=feedback,
                 teacher=None if teacher in (None, "none") else teacher, accurate_dir=accurate)


def _loso(args: argparse.Namespace) -> int:
    """Leave-one-source-out: the out-of-domain numbers of the model card (train extra)."""
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(f"`models loso` needs torch, which is not installed; {TRAIN_EXTRA_HINT}")
    from moderation.training.build import loso

    return loso(Path(args.data_dir), _out_dir(args), quick=bool(args.quick))


def _feedback(args: argparse.Namespace) -> int:
    """Export moderation.verdicts to labelled JSON lines (latest verdict per post; human over LLM; an LLM
    verdict only when the SLM agrees, at half weight)."""
    from moderation.core.bootstrap import resolved
    from moderation.core.settings import load_settings
    from moderation.training.feedback import export

    out = Path(getattr(args, "feedback", None) or "feedback.jsonl")
    settings, where = resolved(load_settings())
    print(f"kafka: {where.describe()}", file=sys.stderr)
    counts = export(settings, out)
    print(
        f"wrote {out}: {counts['posts']} labelled posts ({counts['human']} human, {counts['llm']} LLM agreed by the "
        f"SLM at weight 0.5) from {counts['records']} verdict records; {counts['llm_left_out']} LLM verdicts left "
        "out (no second signal, or the post tries to instruct its reviewer)"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from moderation.training.evaluate import run_eval

    compare: dict[str, Path] = {}
    for spec in getattr(args, "compare", None) or []:
        name, sep, directory = spec.partition("=")
        if not sep or not (Path(directory) / "manifest.json").is_file():
            raise ConfigError(f"--compare {spec!r}: expected NAME=DIR with DIR/manifest.json (a model directory)")
        compare[name] = Path(directory)
    return run_eval(Path(args.data_dir), _out_dir(args), quick=bool(args.quick), compare=compare)


def _derive(args: argparse.Namespace) -> int:
    """fp32 and the CUDA fp16 variant from the shipped int8 file (no torch), checked against the manifest."""
    from moderation.training.quantize import DERIVED, derive

    which = tuple(v.strip() for v in (getattr(args, "variants", None) or ",".join(DERIVED)).split(",") if v.strip())
    if args.action == "fp16":
        which = ("fp16",)
    unknown = sorted(set(which) - set(DERIVED))
    if unknown:
        raise ConfigError(f"--variants {','.join(unknown)}: can derive {', '.join(DERIVED)}")
    model_dir = _out_dir(args)
    made = derive(model_dir, which, record=bool(getattr(args, "record", False)))
    for key, digest in made.items():
        print(f"wrote {model_dir / ('model.' + key + '.onnx')} (sha256 {digest[:12]}…, matches the manifest)")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    """The served per-row int8 variant from a dynamically quantized int8 file (calibrated on val posts)."""
    from moderation.training.quantize import quantize

    source = Path(args.source) if getattr(args, "source", None) else None
    result = quantize(Path(args.data_dir), _out_dir(args), source, version=getattr(args, "version", None))
    plan = result["plan"]
    print(
        f"wrote int8 (per-row activations, sha256 {result['int8'][:12]}…) and fp32 in {result['seconds']} s: "
        f"{sum(len(p.splits) for p in plan.values())} outlier channels split over {len(plan)} activations"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from moderation.models.manifest import load_manifest, verify_all

    model_dir = _out_dir(args)
    manifest = load_manifest(model_dir)
    checked = verify_all(model_dir, manifest)
    print(f"{manifest.name} {manifest.version}: {', '.join(sorted(checked))} match their sha256")
    return 0


def _info(args: argparse.Namespace) -> int:
    path = _out_dir(args) / "manifest.json"
    if not path.exists():
        raise ModelError(f"no manifest at {path}; build one with `moderation models build`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    summary = {k: manifest.get(k) for k in ("name", "version", "base_model", "max_length", "built_at")}
    summary["tasks"] = {t: spec["labels"] for t, spec in manifest.get("tasks", {}).items()}
    summary["files"] = {k: v.get("path") for k, v in manifest.get("files", {}).items()}
    summary["metrics"] = manifest.get("metrics", {}).get("summary", {})
    print(json.dumps(summary, indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    """The drift reference the worker compares live scores with (moderation/training/reference.py)."""
    from moderation.training.reference import run as build_reference

    posts = Path(args.posts) if getattr(args, "posts", None) else None
    return build_reference(_out_dir(args), posts, int(getattr(args, "synthetic", 2000)))


def _bands(args: argparse.Namespace) -> int:
    """Review bands for escalation targets, fitted on the calibration mix (moderation/training/escalation.py)."""
    from moderation.training.escalation import run_bands

    try:
        targets = [float(t) for t in str(getattr(args, "targets", "0.02,0.05,0.10")).split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--targets {args.targets!r}: expected shares such as 0.02,0.05,0.10") from None
    return run_bands(Path(args.data_dir), _out_dir(args), targets, quick=bool(args.quick))


ACTIONS = {
    "build": _build,
    "eval": _eval,
    "fp16": _derive,
    "derive": _derive,
    "quantize": _quantize,
    "verify": _verify,
    "info": _info,
    "reference": _reference,
    "feedback": _feedback,
    "loso": _loso,
    "bands": _bands,
}


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.action](args)
