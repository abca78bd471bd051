"""The committed model: present, intact, and scoring the obvious cases the obvious way.

Not a quality benchmark (that is `moderation models eval` on held-out data, see MODEL_CARD.md); a guard
that the artifacts in the repository load and behave, so a broken export or a swapped head fails CI.
"""

from __future__ import annotations

import pytest

from moderation.core.settings import DEFAULT_MODEL_DIR
from moderation.models.manifest import load_manifest, verify_all
from moderation.pipeline.infer import CPU, OnnxEngine


@pytest.fixture(scope="module")
def engine() -> OnnxEngine:
    return OnnxEngine(DEFAULT_MODEL_DIR, variant="int8", providers=(CPU,))


def test_committed_files_match_the_manifest() -> None:
    manifest = load_manifest(DEFAULT_MODEL_DIR)
    checked = verify_all(DEFAULT_MODEL_DIR, manifest)
    assert {"int8", "tokenizer"} <= set(checked)
    assert manifest.labels()["toxicity"] == ("toxic", "hate", "targeted")


def test_heads_separate_the_obvious_cases(engine: OnnxEngine) -> None:
    clean, insult, spam = engine.score(
        [
            "Had a lovely walk in the park with my kids this afternoon.",
            "Shut up you worthless idiot, nobody wants to hear you.",
            "FREE bitcoin giveaway!!! Send 0.1 BTC to this wallet and get 1 BTC back, click the link now",
        ]
    )
    assert insult["toxicity"]["toxic"] > 0.9 > 0.2 > clean["toxicity"]["toxic"]
    assert spam["spam"]["spam"] > 0.9 > 0.1 > clean["spam"]["spam"]
    assert spam["toxicity"]["toxic"] < 0.5


def test_category_head_names_the_topic(engine: OnnxEngine) -> None:
    texts = {
        "sports": "The striker scored twice in the second half and the club moved top of the league.",
        "business_finance": "Shares fell 6% after the company cut its quarterly revenue forecast.",
        "science_technology": "Researchers released an open-source compiler that halves build times.",
    }
    for expected, scores in zip(texts, engine.score(list(texts.values())), strict=True):
        assert max(scores["category"], key=scores["category"].__getitem__) == expected
        assert sum(scores["category"].values()) == pytest.approx(1.0, abs=1e-4)


def test_emoji_carry_meaning(engine: OnnxEngine) -> None:
    # v1 saw "[UNK]" for both emoji; the tokenize stage now names them (pipeline.tokenize.prepare_text)
    threat, harmless = engine.score(["I would love to 🔪 some 👳🏾", "I would love to 🔪 some 🍅"])
    assert threat["toxicity"]["hate"] > 0.5 > 0.2 > harmless["toxicity"]["hate"]


def test_self_promotion_comment_spam_is_spam(engine: OnnxEngine) -> None:
    promo, fan = engine.score(["check out my channel and subscribe!! 🔥🔥", "great video, just subscribed 👍"])
    assert promo["spam"]["spam"] > 0.9 > 0.1 > fan["spam"]["spam"]
