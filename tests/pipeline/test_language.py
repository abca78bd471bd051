"""The language detector (pipeline/language.py) and the languages the shipped policy does not auto-decide."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from moderation.core.errors import PolicyError
from moderation.core.settings import DEFAULT_POLICY_FILE
from moderation.pipeline.language import UND, Languages, assess_language, detect, normalize_tag
from moderation.pipeline.policy import decide, load_policy, parse_policy
from moderation.pipeline.records import Post

SAMPLE = Path(__file__).parents[2] / "moderation" / "devtools" / "language_posts.jsonl"
SHIPPED = load_policy(DEFAULT_POLICY_FILE)

# Posts written for this test (not from a data set), one language and script per row.
WRITTEN = [
    ("es", "Latn", "¿Alguien sabe a qué hora cierra el supermercado esta noche?"),
    ("de", "Latn", "Wir fahren am Wochenende mit den Kindern an den See"),
    ("fr", "Latn", "Je ne comprends pas pourquoi le train est encore en retard"),
    ("pt", "Latn", "Vamos almoçar juntos amanhã depois da reunião?"),
    ("it", "Latn", "Domani andiamo al mercato a comprare la frutta"),
    ("tr", "Latn", "Yarın sabah erkenden işe gitmem gerekiyor"),
    ("hi", "Deva", "कल सुबह हम सब मिलकर मंदिर जाएंगे"),
    ("zh", "Hans", "明天早上我们一起去图书馆看书吧"),
    ("ja", "Jpan", "明日の朝、駅の前で待ち合わせしましょう"),
    ("ko", "Kore", "내일 아침에 같이 도서관에 가요"),
    ("ar", "Arab", "سنذهب غدا إلى السوق لشراء الخضار"),
    ("ru", "Cyrl", "Завтра утром мы поедем на дачу к бабушке"),
    ("el", "Grek", "Αύριο το πρωί θα πάμε στη θάλασσα"),
    ("he", "Hebr", "מחר בבוקר נלך לים עם הילדים"),
]
ENGLISH = [
    "Just finished my morning run along the river, feeling great!",
    "lol you are such an idiot",
    "FREE ENTRY!! Text WIN to 80086 to claim your prize now",
    "@user thanks for the follow, see you at the game tonight #GoTeam",
    "I can't believe the bus was late again today",
]


@pytest.mark.parametrize(("lang", "script", "text"), WRITTEN, ids=[f"{lang}-{script}" for lang, script, _ in WRITTEN])
def test_detects_the_language_across_scripts(lang: str, script: str, text: str) -> None:
    detected, confidence = detect(text)
    assert detected == lang, (text, detected, confidence)
    assert 0.0 < confidence <= 1.0
    assert not assess_language(SHIPPED.languages, Post(id="x", text=text)).supported


@pytest.mark.parametrize("text", ENGLISH)
def test_english_is_english(text: str) -> None:
    assert detect(text)[0] == "en"
    assert assess_language(SHIPPED.languages, Post(id="x", text=text)).supported


TOO_LITTLE = ["😂😂😂🔥", "https://t.co/x7Gq2LpZ", "@user @other", "ok lol", "#tbt 👍", "...", "12 34 56"]


@pytest.mark.parametrize("text", TOO_LITTLE)
def test_too_little_text_is_undetermined(text: str) -> None:
    assert detect(text) == (UND, 0.0)
    got = assess_language(SHIPPED.languages, Post(id="x", text=text))
    assert got.effective == UND and got.supported


def test_a_few_letters_of_another_script_are_enough() -> None:
    # five Latin letters could be any language; two Han characters or three Arabic letters are not English
    assert detect("滚开")[0] == "zh" and detect("كلب")[0] == "ar"
    assert not assess_language(SHIPPED.languages, Post(id="x", text="滚开")).supported


def test_links_mentions_and_emoji_do_not_change_the_language() -> None:
    text = "Wir fahren am Wochenende mit den Kindern an den See"
    noisy = f"@anna {text} 🚗🌊 https://example.com/see?x=1 #urlaub"
    assert detect(noisy)[0] == detect(text)[0] == "de"


def test_detection_is_deterministic() -> None:
    assert {detect(text) for text in [WRITTEN[0][2]] * 5} == {detect(WRITTEN[0][2])}


def test_scoring_a_chunk_is_py3langids_classify_text_by_text() -> None:
    """The detector scores a batch at once; each answer is py3langid's own (same language, confidence within
    1e-4), and does not depend on the texts scored with it."""
    import numpy as np
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from moderation.pipeline import language

    shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    reference = LanguageIdentifier(
        shipped.nb_ptc.astype(np.float32), shipped.nb_pc, [language._RELABEL.get(c, c) for c in shipped.nb_classes],
        shipped.tk_nextmove, shipped.tk_output, norm_probs=True, tk_row=shipped.tk_row,
    )  # fmt: skip
    texts = [p["text"] for p in sample_posts()] + ENGLISH + TOO_LITTLE + [t for _, _, t in WRITTEN]
    together = language.detect_many(texts)
    assert together == [detect(t) for t in texts] == language.detect_many(texts[::-1])[::-1]
    assert together == [d for i in range(0, len(texts), 7) for d in language.detect_many(texts[i : i + 7])]
    for text, (lang, p) in zip(texts, together, strict=True):
        if lang != UND:
            expected, q = reference.classify(language.clean(text))
            assert (lang, p) == pytest.approx((expected, q), abs=1e-4), text


def test_declared_tags_are_normalised() -> None:
    assert [normalize_tag(t) for t in ("en", "EN", "en-US", "pt_BR", "zh-Hant", "cmn", "arz")] == [
        "en", "en", "en", "pt", "zh", "zh", "ar",
    ]  # fmt: skip
    assert {normalize_tag(t) for t in (None, "", " ", "und", "mul", "zxx", "english", "x-klingon", "12")} == {None}


SPANISH = "¿Alguien sabe a qué hora cierra el supermercado esta noche?"


def test_a_producers_lang_wins_and_both_are_recorded() -> None:
    rule = SHIPPED.languages
    trusted = assess_language(rule, Post(id="x", text=SPANISH, lang="en-US"))
    assert (trusted.effective, trusted.detected, trusted.declared, trusted.supported) == ("en", "es", "en", True)
    declared = assess_language(rule, Post(id="x", text="ok lol", lang="es"))
    assert (declared.effective, declared.detected, declared.supported) == ("es", UND, False)
    checked = assess_language(rule.model_copy(update={"trust_declared": False}), Post(id="x", text=SPANISH, lang="en"))
    assert (checked.effective, checked.declared, checked.supported) == ("es", "en", False)


def test_an_unsure_detection_counts_only_when_no_supported_language_is_likely() -> None:
    text = "Halt dein Maul, du Lappen"  # short: py3langid says German at ~0.2, English not ruled out
    detected, confidence = detect(text)
    assert detected == "de" and confidence < 0.7
    assert assess_language(SHIPPED.languages, Post(id="x", text=text)).effective == UND
    lenient = Languages(min_confidence=0.1)
    assert assess_language(lenient, Post(id="x", text=text)).effective == "de"


def test_the_policy_refuses_language_codes_the_detector_never_reports() -> None:
    base = "version: l\nlabels: {toxicity.toxic: {review: 0.5, block: 0.9}}\n"
    for bad in ("languages: {supported: [EN]}", "languages: {supported: [english]}", "languages: {supported: [nb]}"):
        with pytest.raises(PolicyError, match="lower-case ISO 639 code"):
            parse_policy(base + bad)
    with pytest.raises(PolicyError, match="per_language names supported languages"):
        parse_policy(base + "languages: {per_language: {en: {action: keep}}}")


# --- the check of issue 20: the team's posts in 21 languages and 11 scripts, at the shipped policy ---------


def sample_posts() -> list[dict[str, str]]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


BENIGN = {"toxicity": {"toxic": 0.01, "hate": 0.01}, "spam": {"ham": 0.99, "spam": 0.01}}
SPAM = {"toxicity": {"toxic": 0.01, "hate": 0.01}, "spam": {"ham": 0.01, "spam": 0.995}}


def test_non_english_posts_are_never_auto_decided_at_the_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    posts = [p for p in sample_posts() if p["set"] in ("dev", "heldout")]
    assert len({p["lang"] for p in posts}) >= 6 and len({p["script"] for p in posts}) >= 6
    flagged: Counter[str] = Counter()
    exact: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed = []
    for p in posts:
        post = Post(id="s", text=p["text"])
        benign, spam = decide(SHIPPED, post, BENIGN), decide(SHIPPED, post, SPAM)
        key = p["set"]
        total[key] += 1
        exact[key] += benign.language is not None and benign.language.detected == p["lang"]
        if "unsupported_language" in benign.triggers:
            flagged[key] += 1
            # never auto-allowed (benign scores) nor auto-blocked (spam scores): review, and the LLM-review topic
            assert benign.action == spam.action == "review" and benign.escalate and spam.escalate, p
            assert any(r.startswith(f"unsupported language {benign.language.effective} ") for r in benign.reasons)
        else:
            missed.append(p)
    with capsys.disabled():
        for key in total:
            print(
                f"\n[languages] {key}: unsupported_language on {flagged[key]}/{total[key]}, "
                f"language named exactly {exact[key]}/{total[key]}"
            )
    # the dev set chose the thresholds: all of it; posts in a non-Latin script: all of them; the posts
    # written after the thresholds were fixed: the six short Latin-script ones the README lists are missed
    assert flagged["dev"] == total["dev"]
    assert all(p["script"] == "Latn" for p in missed), missed
    assert flagged["heldout"] >= 0.95 * total["heldout"], missed
    assert exact["dev"] >= 0.97 * total["dev"] and exact["heldout"] >= 0.94 * total["heldout"]


def test_english_and_undetermined_posts_are_decided_as_before() -> None:
    off = SHIPPED.model_copy(update={"languages": SHIPPED.languages.model_copy(update={"enabled": False})})
    for text in [*ENGLISH, "😂😂😂", "ok lol", "https://t.co/x"]:
        post = Post(id="e", text=text)
        for scores in (BENIGN, SPAM):
            on, before = decide(SHIPPED, post, scores), decide(off, post, scores)
            assert (on.action, on.triggers, on.reasons) == (before.action, before.triggers, before.reasons), text
            assert on.language is not None and on.language.supported and before.language is None
