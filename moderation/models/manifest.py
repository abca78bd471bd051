"""manifest.json: what a model artifact directory contains, and proof that it is intact.

The worker refuses to start on a model it cannot vouch for: every file the engine loads is checked
against the sha256 recorded at build time, so a truncated download, a bad merge or a Git LFS
pointer never gets to score posts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moderation.core.errors import ModelError

MANIFEST_NAME = "manifest.json"
REBUILD_HINT = "rebuild with `moderation models build`"
_CHUNK = 1 << 20


class FileEntry(BaseModel):
    """One artifact file, relative to the artifact directory."""

    model_config = ConfigDict(extra="allow")

    path: str
    sha256: str | None = Field(None, description="Hex digest; absent only for derived files not yet recorded.")
    derived_from: str | None = Field(None, description="Variant this file is generated from, if any.")
    optional: bool = Field(
        False, description="Not shipped in the repository (derived from int8); only checked when used."
    )


class TaskSpec(BaseModel):
    """One model head: which graph output it is and what its columns mean."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["multilabel", "multiclass"]
    output: str
    labels: list[str] = Field(min_length=1)
    temperature: float | list[float] = 1.0

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels {self.labels}")
        if self.kind == "multiclass" and len(self.labels) < 2:
            raise ValueError("a multiclass task needs at least two labels")
        if isinstance(self.temperature, list) and len(self.temperature) != len(self.labels):
            raise ValueError(f"{len(self.temperature)} temperatures for {len(self.labels)} labels; need one per label")
        return self


class Manifest(BaseModel):
    """Schema of manifest.json (see the model contract in the README)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    base_model: str = ""
    max_length: int = Field(128, ge=2, le=512)
    tokenizer: str = "tokenizer.json"
    files: dict[str, FileEntry]
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    default_thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)
    # escalation target ("0.05") → "task.label" or "category/task.label" → {"review": r, "block": b}: review
    # bands fitted on the calibration split (`moderation models bands`); MODERATION_ESCALATION_TARGET picks one
    review_bands: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    # how texts were prepared for the model at training time; serving must do the same (absent: raw text,
    # as every model before 2.0.0 was trained)
    text_preparation: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    data_sources: list[dict[str, Any]] = Field(default_factory=list)
    built_at: str = ""
    build_command: str = ""

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        if "tokenizer" not in self.files:
            raise ValueError("files.tokenizer is missing")
        if not any(k in self.files for k in ("int8", "fp32", "fp16")):
            raise ValueError("files lists no model (need at least one of int8, fp32, fp16)")
        for key, entry in self.files.items():
            if entry.sha256 is None and entry.derived_from is None:
                raise ValueError(f"files.{key} has no sha256")
        outputs = [t.output for t in self.tasks.values()]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"two tasks share a graph output: {outputs}")
        return self

    def labels(self) -> dict[str, tuple[str, ...]]:
        return {task: tuple(spec.labels) for task, spec in self.tasks.items()}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> Manifest:
    """Parse and schema-check ``model_dir/manifest.json`` (no file hashing yet)."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"no model manifest at {path}: point MODERATION_MODEL_DIR at a model artifact directory, "
            f"restore it with `git checkout -- {path}` or {REBUILD_HINT}"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ModelError(
            f"model manifest {path} is not valid JSON ({exc}): restore it with `git checkout -- {path}` "
            f"or {REBUILD_HINT}"
        ) from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ModelError(
            f"model manifest {path} is invalid ({problems}): fix it, restore it with "
            f"`git checkout -- {path}` or {REBUILD_HINT}"
        ) from exc


def file_path(model_dir: Path, manifest: Manifest, key: str) -> Path:
    """Absolute path of ``files[key]``; ModelError if the manifest does not list it."""
    entry = manifest.files.get(key)
    if entry is None:
        listed = ", ".join(sorted(manifest.files))
        raise ModelError(
            f"model {manifest.name} {manifest.version} has no '{key}' file (manifest lists: {listed}); "
            f"choose another variant or {REBUILD_HINT}"
        )
    return Path(model_dir) / entry.path


def _fix_hint(entry: FileEntry, path: Path) -> str:
    if entry.derived_from is not None:
        return (
            "derive it from the shipped int8 file with `moderation models derive` (no torch; needs onnx + sympy: "
            "pip install -e '.[fp16]')"
        )
    if entry.optional:
        return f"it is not shipped in the repository: {REBUILD_HINT} (`make models`, train extra)"
    return f"restore it with `git checkout -- {path}` or {REBUILD_HINT}"


def verify_file(model_dir: Path, manifest: Manifest, key: str) -> Path:
    """Check that ``files[key]`` exists and matches its sha256; return its path.

    Derived files without a recorded digest (fp16) are only checked for existence.
    """
    entry = manifest.files.get(key)
    path = file_path(model_dir, manifest, key)
    assert entry is not None  # file_path raised otherwise
    if not path.is_file():
        raise ModelError(f"model file {path} ({key}) is missing: {_fix_hint(entry, path)}")
    if entry.sha256 is not None:
        actual = sha256_file(path)
        if actual != entry.sha256.lower():
            hint = ""
            if path.stat().st_size < 1024 and path.read_bytes().startswith(b"version https://git-lfs"):
                hint = " (it is a Git LFS pointer: run `git lfs pull`)"
            raise ModelError(
                f"model file {path} ({key}) is corrupt (sha256 mismatch: manifest {entry.sha256[:12]}…, "
                f"file {actual[:12]}…){hint}: {_fix_hint(entry, path)}"
            )
    return path


def verify_all(model_dir: Path, manifest: Manifest, include_derived: bool = False) -> dict[str, Path]:
    """Verify every listed file (derived and optional ones only if asked, since they are not committed)."""
    checked: dict[str, Path] = {}
    for key, entry in manifest.files.items():
        if entry.derived_from is not None and entry.sha256 is None and not include_derived:
            continue
        if entry.optional and not include_derived and not (Path(model_dir) / entry.path).is_file():
            continue
        checked[key] = verify_file(model_dir, manifest, key)
    return checked


def has_file(model_dir: Path, manifest: Manifest, key: str) -> bool:
    """Whether ``files[key]`` is listed and present on disk (not verified)."""
    entry = manifest.files.get(key)
    return entry is not None and (Path(model_dir) / entry.path).is_file()
