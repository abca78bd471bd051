"""moderation/training/reference.py: the drift reference the worker loads, built with the worker's own code."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from moderation.core.settings import DEFAULT_MODEL_DIR, Settings
from moderation.models.manifest import load_manifest, verify_all
from moderation.training.reference import build_reference, write_reference
from moderation.worker.drift import SCORE_BUCKETS, DriftTracker, Reference
from moderation.worker.metrics import WorkerMetrics


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, level: str):  # type: ignore[no-untyped-def]
        return lambda event, **_: self.events.append(event)


def test_reference_is_recorded_in_the_manifest_and_loaded_by_the_worker(
    tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    values = [orjson.dumps({"id": str(i), "text": f"post number {i} about things"}) for i in range(70)]
    values.append(b"not json")  # dead-lettered, not counted
    settings = Settings(model_dir=model_dir, policy_file=tiny_policy_file, providers="CPUExecutionProvider")
    reference = build_reference(values, "test mix", settings)
    assert reference["posts"] == 70 and reference["buckets"] == list(SCORE_BUCKETS)
    assert abs(sum(reference["actions"].values()) - 1) < 0.01
    write_reference(model_dir, reference)
    manifest = load_manifest(model_dir)
    assert "drift_reference" in verify_all(model_dir, manifest)  # hashed like every shipped file

    metrics, log = WorkerMetrics(), Log()
    metrics.configure_drift(model_dir, manifest.labels(), log)
    assert log.events == ["drift_reference_loaded"]
    assert metrics.scores.tracker is not None and metrics.scores.tracker.expected is not None


def test_the_shipped_reference_fits_the_shipped_model() -> None:
    manifest = load_manifest(DEFAULT_MODEL_DIR)
    assert "drift_reference" in verify_all(DEFAULT_MODEL_DIR, manifest)
    reference = Reference.load(DEFAULT_MODEL_DIR / manifest.files["drift_reference"].path)
    assert reference.model["version"] == manifest.version and reference.posts >= 1000
    keys = [(task, label) for task, labels in manifest.labels().items() for label in labels]
    DriftTracker(keys, reference)  # raises when buckets or labels do not fit
    assert 0 < reference.escalation_rate < 0.25  # the alert's budget sits above the reference
