"""A worker whose scorer costs nothing: the ceiling of everything around the model.

On a GPU the model is fast (~150k posts/s for MiniLM-L6 fp16 at batch ≥ 1024), so what limits a worker
process is the Python path around it: consuming, decoding, dedupe, policy, building and producing
records, committing. On this CPU machine the real model hides all of that. ``python -m
moderation.devtools.bench.free`` runs the real ``moderation worker`` — same settings, topics, decode,
dedupe, policy, emit, produce and commits — with :class:`FixedScorer` in place of ONNX Runtime.

It lives with the benchmarks on purpose: the serving code cannot import it and no ``MODERATION_*``
setting selects it (``tests/test_layout.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from moderation.core.logs import configure_logging
from moderation.core.settings import Settings, load_settings
from moderation.models.manifest import load_manifest
from moderation.pipeline.records import Scores

PROVIDER = "FixedScorer (benchmark only: no model)"


class FixedScorer:
    """Returns the same scores for every text, for the labels of the configured model's manifest.

    The scores sit in the middle of a typical policy's allow band for most labels and in a review band
    for one, so the policy, the action topics and (some) escalation records all see work, as with
    real traffic; they are one shared mapping, so scoring costs one list multiplication.
    """

    def __init__(self, labels: dict[str, tuple[str, ...]], name: str, version: str) -> None:
        self.labels = labels
        self.name = name
        self.version = version
        scores: Scores = {}
        for task, names in labels.items():
            if len(names) > 1 and task == "category":  # a confident single category
                scores[task] = {label: (0.9 if i == 0 else 0.1 / (len(names) - 1)) for i, label in enumerate(names)}
            else:
                scores[task] = dict.fromkeys(names, 0.02)
        self.scores = scores

    @classmethod
    def from_settings(cls, settings: Settings) -> FixedScorer:
        manifest = load_manifest(settings.model_dir)
        return cls(manifest.labels(), manifest.name, manifest.version)

    def score(self, texts: Sequence[str], timings: dict[str, float] | None = None) -> list[Scores]:
        return [self.scores] * len(texts)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "variant": "none",
            "provider": PROVIDER,
            "labels": {task: list(names) for task, names in self.labels.items()},
        }


def main() -> int:
    from moderation.worker.cli import serve

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, repeat_window_s=settings.log_repeat_window_s)
    return serve(settings, scorer_factory=FixedScorer.from_settings)


if __name__ == "__main__":
    sys.exit(main())
