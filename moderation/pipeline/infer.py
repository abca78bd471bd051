"""Infer: post texts → calibrated probabilities from the three ONNX heads.

``OnnxEngine`` is the only place ONNX Runtime is touched. It refuses to start on a model it cannot
verify (manifest sha256s, output shapes checked by a warm-up run per length bucket) and it reports
the execution provider that is *actually* active, since ORT silently falls back to CPU when CUDA
cannot be loaded; ``require_provider`` turns that fallback into a start-up error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from moderation.core.errors import ModelError, ProviderError
from moderation.models.manifest import Manifest, file_path, has_file, load_manifest, verify_file
from moderation.pipeline.records import Scores
from moderation.pipeline.tokenize import Batch, TextTokenizer, group_by_bucket, pad_batch

if TYPE_CHECKING:
    import onnxruntime as ort

    from moderation.core.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
VARIANTS = ("int8", "fp16", "fp32")
INPUT_NAMES = ("input_ids", "attention_mask")


@runtime_checkable
class Scorer(Protocol):
    """Anything that turns texts into per-task, per-label probabilities."""

    def score(self, texts: Sequence[str], timings: dict[str, float] | None = None) -> list[Scores]:
        """Scores in input order; adds seconds per stage (``tokenize``, ``infer``) to ``timings``."""
        ...


def choose_variant(requested: str, cuda_active: bool, available: Mapping[str, bool]) -> str:
    """Which model file to load.

    ``auto``: fp16 on CUDA when it has been derived; fp32 on CUDA otherwise (dynamic-int8 kernels
    exist only for CPU, so int8 on CUDA would bounce between devices); int8 on CPU.
    ``available`` says which variant files are present.
    """
    if requested != "auto":
        if requested not in VARIANTS:
            raise ModelError(f"unknown model variant {requested!r}: use one of auto, {', '.join(VARIANTS)}")
        return requested
    if cuda_active:
        if available.get("fp16"):
            return "fp16"
        if available.get("fp32"):
            log.warning("fp16 model not found; serving fp32 on CUDA. Create it with `moderation models fp16`.")
            return "fp32"
    if available.get("int8"):
        return "int8"
    if available.get("fp32"):
        log.warning("int8 model not found; serving fp32 on CPU (slower).")
        return "fp32"
    return "int8"  # let verification report the missing file with its fix


MODEL_RECORD_KEYS = ("name", "version", "variant", "provider", "sha256")


def model_record(info: Mapping[str, Any]) -> dict[str, Any]:
    """What a decision record says about the model that made it (``sha256``: the served file, so an
    audit can tell two variants of one version apart; absent for scorers without a file)."""
    return {k: info[k] for k in MODEL_RECORD_KEYS if info.get(k) is not None}


MIN_ROWS_PER_RUN = 8


def split_for_runs(groups: list[list[int]], runs: int) -> list[list[int]]:
    """Row groups (one per length bucket) → at least ``runs`` chunks where the batch is big enough.

    The largest chunk is halved until there are ``runs`` chunks or halving would leave fewer than
    MIN_ROWS_PER_RUN rows, so concurrent runs get similar work and tiny batches stay one run.
    """
    chunks = [g for g in groups if g]
    while len(chunks) < runs:
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
        rows = chunks[largest]
        if len(rows) < 2 * MIN_ROWS_PER_RUN:
            break
        half = len(rows) // 2
        chunks[largest : largest + 1] = [rows[:half], rows[half:]]
    return chunks


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Requested providers that this onnxruntime build offers, in the requested order."""
    usable = [p for p in requested if p in available]
    if not usable:
        raise ProviderError(
            f"none of the requested ONNX Runtime providers {list(requested)} is available "
            f"(this onnxruntime offers {list(available)}): set MODERATION_PROVIDERS to one of those, "
            "or install onnxruntime-gpu for CUDA"
        )
    return usable


def _session_options(intra_op_threads: int, spinning: bool) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Spinning threads answer the next batch sooner but burn a core between batches, starving the
    # Kafka client and event loop on small machines; worth it only for back-to-back benchmarks.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


class OnnxEngine:
    """Verified, thread-safe ONNX Runtime scorer for one model artifact directory."""

    def __init__(
        self,
        model_dir: Path,
        variant: str = "auto",
        providers: Sequence[str] = (CPU,),
        *,
        require_provider: str = "",
        intra_op_threads: int = 0,
        length_buckets: Sequence[int] = (16, 32, 64, 128),
        split_by_bucket: bool = True,
        spinning: bool = False,
        parallel_runs: int = 1,
        warmup: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.manifest: Manifest = load_manifest(self.model_dir)
        self.providers_available = list(ort.get_available_providers())
        wanted = resolve_providers(providers, self.providers_available)
        available = {v: has_file(self.model_dir, self.manifest, v) for v in VARIANTS}
        self.variant = choose_variant(variant, cuda_active=CUDA in wanted, available=available)
        tokenizer_path = verify_file(self.model_dir, self.manifest, "tokenizer")
        self.tokenizer = TextTokenizer(
            tokenizer_path, self.manifest.max_length, length_buckets,
            emoji_to_words=bool(self.manifest.text_preparation.get("emoji_to_words", False)),
        )
        self.split_by_bucket = split_by_bucket
        self._tasks = {task: spec.output for task, spec in self.manifest.tasks.items()}
        self.labels: dict[str, tuple[str, ...]] = self.manifest.labels()
        options = _session_options(intra_op_threads, spinning)

        self.session = self._open(self.variant, options, wanted)
        active = self.session.get_providers()
        self.provider: str = active[0] if active else "unknown"
        if require_provider and self.provider != require_provider:
            raise ProviderError(
                f"MODERATION_REQUIRE_PROVIDER={require_provider} but ONNX Runtime is running on "
                f"{self.provider} (requested {wanted}, available {self.providers_available}); "
                + (
                    "CUDA libraries (cuDNN/CUDA runtime) could not be loaded — check the onnxruntime-gpu "
                    "install and the driver"
                    if require_provider == CUDA
                    else f"add {require_provider} to MODERATION_PROVIDERS"
                )
            )
        if CUDA in wanted and self.provider != CUDA:
            log.warning("CUDA was requested but ONNX Runtime fell back to %s; scoring on CPU.", self.provider)
            cpu_variant = choose_variant(variant, cuda_active=False, available=available)
            if cpu_variant != self.variant:  # auto picked a GPU variant: serve the CPU one instead
                self.variant = cpu_variant
                self.session = self._open(cpu_variant, options, [CPU])
        self._check_io()
        self.use_iobinding = self.provider == CUDA
        # On CUDA one big run is best; on CPU, concurrent single-threaded runs beat one multi-threaded run.
        self.parallel_runs = 1 if self.provider == CUDA else max(1, parallel_runs)
        self._pool = ThreadPoolExecutor(self.parallel_runs, "ort-run") if self.parallel_runs > 1 else None
        if warmup:
            self.warm_up()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OnnxEngine:
        kwargs: dict[str, Any] = {
            "variant": settings.model_variant,
            "providers": settings.provider_list(),
            "require_provider": settings.require_provider,
            "intra_op_threads": settings.intra_op_threads,
            "length_buckets": settings.bucket_lengths(),
            "parallel_runs": settings.parallel_runs,
        }
        kwargs.update(overrides)
        return cls(settings.model_dir, **kwargs)

    # --- set-up checks -------------------------------------------------------------------------------

    def _open(self, variant: str, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
        import onnxruntime as ort

        model_path = verify_file(self.model_dir, self.manifest, variant)
        try:
            return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own (Fail, InvalidGraph, ...) exception types
            raise ModelError(
                f"ONNX Runtime cannot load {model_path}: {exc}. Restore it with "
                f"`git checkout -- {model_path}` or rebuild with `moderation models build`"
            ) from exc

    def _check_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        missing_in = [n for n in INPUT_NAMES if n not in inputs]
        missing_out = [o for o in self._tasks.values() if o not in outputs]
        if missing_in or missing_out:
            raise ModelError(
                f"model {self.manifest.name} {self.variant} does not follow the contract: graph inputs "
                f"{sorted(inputs)}, outputs {sorted(outputs)}; missing inputs {missing_in}, outputs "
                f"{missing_out}. Rebuild it with `moderation models build`"
            )

    def warm_up(self) -> None:
        """One run per length bucket: allocates ORT's buffers per shape and checks output widths."""
        for bucket in self.tokenizer.buckets:
            ids = np.full((1, bucket), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((1, bucket), dtype=np.int64)
            ids[0, 0], mask[0, :2] = 1, 1
            outs = self.run_batch(Batch(ids, mask))
            for task, labels in self.labels.items():
                shape = outs[task].shape
                if shape != (1, len(labels)):
                    raise ModelError(
                        f"model output '{self._tasks[task]}' has shape {shape} but the manifest lists "
                        f"{len(labels)} labels for {task}: the manifest and {self.variant} model are from "
                        "different builds; rebuild with `moderation models build`"
                    )

    # --- scoring -------------------------------------------------------------------------------------

    def run_batch(self, batch: Batch, iobinding: bool | None = None) -> dict[str, np.ndarray]:
        """One ORT call on already tokenized, padded inputs; task → float32 ``[batch, n_labels]``."""
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        names = list(self._tasks.values())
        if self.use_iobinding if iobinding is None else iobinding:
            binding = self.session.io_binding()  # one per call: bindings are not thread-safe
            for name, array in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            device = "cuda" if self.provider == CUDA else "cpu"
            for name in names:
                binding.bind_output(name, device)
            self.session.run_with_iobinding(binding)
            # copy_outputs_to_cpu returns outputs in bind_output order
            by_name = dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))
        else:
            by_name = dict(zip(names, self.session.run(names, feeds), strict=True))
        return {task: np.asarray(by_name[out], dtype=np.float32) for task, out in self._tasks.items()}

    def score_arrays(self, texts: Sequence[str], timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Probabilities as arrays (task → ``[len(texts), n_labels]``), rows in input order."""
        started = time.perf_counter()
        ids = self.tokenizer.token_ids(texts)
        if timings is not None:
            timings["tokenize"] = timings.get("tokenize", 0.0) + time.perf_counter() - started
        try:
            return self._run_tokenized(ids)
        finally:
            if timings is not None:
                timings["infer"] = timings.get("infer", 0.0) + time.perf_counter() - started - timings["tokenize"]

    def _run_tokenized(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        if not ids:
            return {task: np.zeros((0, len(labels)), np.float32) for task, labels in self.labels.items()}
        if self.split_by_bucket:
            groups = list(group_by_bucket([len(s) for s in ids], self.tokenizer.buckets).values())
        else:
            groups = [list(range(len(ids)))]
        chunks = split_for_runs(groups, self.parallel_runs)
        if len(chunks) == 1:
            return self.run_batch(pad_batch(ids, self.tokenizer.buckets, self.tokenizer.pad_id))

        def run(rows: list[int]) -> dict[str, np.ndarray]:
            return self.run_batch(pad_batch([ids[r] for r in rows], self.tokenizer.buckets, self.tokenizer.pad_id))

        outs = list(self._pool.map(run, chunks)) if self._pool is not None else [run(rows) for rows in chunks]
        result = {task: np.empty((len(ids), len(labels)), np.float32) for task, labels in self.labels.items()}
        for rows, out in zip(chunks, outs, strict=True):
            for task, values in out.items():
                result[task][rows] = values
        return result

    def score(self, texts: Sequence[str], timings: dict[str, float] | None = None) -> list[Scores]:
        """Per-post ``{task: {label: probability}}`` in input order."""
        arrays = self.score_arrays(texts, timings)
        per_task = [(task, self.labels[task], arrays[task].tolist()) for task in self.labels]
        return [
            {task: dict(zip(labels, rows[i], strict=True)) for task, labels, rows in per_task}
            for i in range(len(texts))
        ]

    def info(self) -> dict[str, Any]:
        """What is being served, for logs, /readyz and the decisions' audit trail."""
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "variant": self.variant,
            "model_file": str(file_path(self.model_dir, self.manifest, self.variant)),
            "sha256": self.manifest.files[self.variant].sha256,
            "provider": self.provider,
            "providers_available": self.providers_available,
            "iobinding": self.use_iobinding,
            "labels": {task: list(labels) for task, labels in self.labels.items()},
            "max_length": self.manifest.max_length,
            "buckets": list(self.tokenizer.buckets),
        }
