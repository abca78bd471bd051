"""The shipped model decides a post the same way whatever its batchmates (issue: reproducible decisions).

The same posts are scored alone, in batches of 7, 64 and 512, and mixed among other posts of every
length; probabilities must agree within 1e-4 and the default policy's action and triggers exactly.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from moderation.core.settings import DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, PACKAGE_DIR
from moderation.pipeline.infer import CPU, OnnxEngine
from moderation.pipeline.policy import decide, load_policy
from moderation.pipeline.records import Post

SAMPLE_POSTS = PACKAGE_DIR / "devtools" / "demo_data" / "sample_posts.jsonl"
_PHRASES = (
    "the market crashed again and nobody saw it coming you absolute idiot click here free money win now "
    "great match last night the keeper saved everything shut up nobody asked about your stupid opinion"
)
WORDS = _PHRASES.split(" ")


def _posts() -> list[str]:
    texts = []
    for line in SAMPLE_POSTS.read_bytes().splitlines():
        try:  # the sample also holds the demo's broken records (DLQ cases)
            texts.append(json.loads(line)["text"])
        except (ValueError, KeyError, TypeError):
            continue
    rng = random.Random(7)
    texts += [" ".join(rng.choices(WORDS, k=rng.randint(1, 90))) for _ in range(140)]
    return [t for t in texts if isinstance(t, str) and t.strip()]


@pytest.fixture(scope="module")
def engine() -> OnnxEngine:
    return OnnxEngine(DEFAULT_MODEL_DIR, variant="int8", providers=(CPU,))


def _in_batches(engine: OnnxEngine, texts: list[str], size: int) -> dict[str, np.ndarray]:
    parts = [engine.score_arrays(texts[i : i + size]) for i in range(0, len(texts), size)]
    return {task: np.concatenate([p[task] for p in parts]) for task in parts[0]}


def _decisions(engine: OnnxEngine, texts: list[str], arrays: dict[str, np.ndarray]) -> list[tuple[str, tuple]]:
    policy = load_policy(DEFAULT_POLICY_FILE)
    out = []
    for i, text in enumerate(texts):
        scores = {t: dict(zip(engine.labels[t], map(float, arrays[t][i]), strict=True)) for t in engine.labels}
        d = decide(policy, Post(id=str(i), text=text), scores)
        out.append((d.action, tuple(d.triggers), tuple(d.labels)))
    return out


def test_scores_actions_and_triggers_do_not_depend_on_batchmates(engine: OnnxEngine) -> None:
    texts = _posts()
    alone = _in_batches(engine, texts, 1)
    expected = _decisions(engine, texts, alone)
    rng = random.Random(11)
    others = [" ".join(rng.choices(WORDS, k=rng.randint(1, 120))) for _ in range(600)]
    batchings = {size: _in_batches(engine, texts, size) for size in (7, 64, 512)}
    mixed_texts = others[:300] + texts + others[300:]
    mixed = engine.score_arrays(mixed_texts)
    batchings["mixed"] = {t: v[300 : 300 + len(texts)] for t, v in mixed.items()}
    for name, arrays in batchings.items():
        worst = max(float(np.abs(arrays[t] - alone[t]).max()) for t in alone)
        assert worst <= 1e-4, f"batching {name}: a probability moved by {worst}"
        assert _decisions(engine, texts, arrays) == expected, f"batching {name} changed a decision"


def test_shipped_int8_is_the_per_row_variant(engine: OnnxEngine) -> None:
    import onnx

    from moderation.models.variants import rowwise_metadata

    model = onnx.load(str(DEFAULT_MODEL_DIR / engine.manifest.files["int8"].path), load_external_data=False)
    assert rowwise_metadata(model) is not None
    assert "DynamicQuantizeLinear" not in {n.op_type for n in model.graph.node}
