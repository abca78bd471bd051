"""Which language a post is written in — the models are trained on English only.

:func:`detect` is py3langid (a naive-Bayes byte n-gram model over 142 languages, bundled in the wheel:
nothing is downloaded) on the post's text with what carries no language removed first (URLs, e-mail
addresses, @mentions, the ``#`` of hashtags, emoji and other symbols). Deterministic: same text, same
answer. What it returns:

* an ISO 639-1 code where the language has one, else py3langid's ISO 639-3 code (``ckb``, ``fuv``);
  the individual languages of a macrolanguage are reported as the macrolanguage (``arz``, ``ary`` → ``ar``;
  ``wuu``, ``yue`` → ``zh``), so a dialect does not split the probability of its language;
* ``pcm`` (Nigerian Pidgin) is reported as ``en``: on short posts py3langid gives that name to informal
  English (slang, texting: 0.5-0.8 % of the English tweets and SMS of the training sets), which the English
  models were trained on;
* ``und`` (undetermined) for text with less than :data:`MIN_LETTERS` letters once stripped (emoji only,
  a link, "ok lol"), and where py3langid itself finds no linguistic content (its ``zxx``). A letter outside
  the Latin script counts :data:`OTHER_SCRIPT_WEIGHT`: its script alone narrows the language to a few, so
  "滚开" or "भाग जाओ यहाँ से" are read, where five Latin letters could be any language.

The confidence is py3langid's normalised probability of that language (the softmax of its scores scaled
by 1/sqrt(length), so short texts get lower confidences). How the policy uses it, and a producer's
``lang``, is :func:`assess_language` with the policy's :class:`Languages`; measured accuracy and cost are in the
README ("Languages") and ``python -m moderation.devtools.languages``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moderation.pipeline.records import Action, Language, Post

UND = "und"  # undetermined (BCP 47): too little text to say, or no language in it
MIN_LETTERS = 8  # below this many letters (weighted, see letter_weight) the language is "und"
OTHER_SCRIPT_WEIGHT = 4  # a letter of another script than Latin counts as this many
MAX_CHARS = 600  # the language of a long post is that of its first 600 characters (bounds the cost)

# py3langid's label → the code reported (see the module docstring)
_RELABEL = {"arz": "ar", "ary": "ar", "wuu": "zh", "yue": "zh", "pcm": "en", "zxx": UND}
# individual languages → macrolanguage, for declared tags too (ISO 639-3 codes a producer may send)
_MACRO = {"arz": "ar", "ary": "ar", "arb": "ar", "cmn": "zh", "wuu": "zh", "yue": "zh", "nb": "no", "nob": "no"}
_NO_LANGUAGE_TAGS = frozenset({UND, "mul", "zxx", "mis"})  # BCP 47: undetermined, multiple, none, uncoded

# What says nothing about the language: links, addresses, @mentions, hashtag marks, emoji and symbols.
_NOISE = re.compile(
    r"https?://\S+|www\.\S+|\S+@\S+\.\w+|@\w+|#"
    r"|[\u2190-\u2bff\u2e80-\u2eff\u3000-\u303f\ufe0f\u200d\U0001f000-\U0001faff\U000e0000-\U000e007f]"
)
_LETTER = re.compile(r"[^\W\d_]")  # \w less digits and "_": letters (str.isalpha)
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")  # letters of the Latin blocks (and a few signs)

_lock = threading.Lock()
_identifier: Any = None


def load() -> Any:
    """The py3langid identifier, loaded once per process (~1 s; ~105 MiB resident). The worker calls this at
    start-up so that the first batch does not pay for it."""
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                _identifier = _build()
    return _identifier


def _build() -> Any:
    import numpy as np
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    # The same model with (1) labels that share a code merged — py3langid sums aliased classes' probabilities —
    # and (2) its float16 table as float32: numpy's float16 matrix product is not vectorised, and was half of
    # the per-post cost (71 -> ~40 us for a 94-byte post, for +28 MiB).
    return LanguageIdentifier(
        shipped.nb_ptc.astype(np.float32),
        shipped.nb_pc,
        [_RELABEL.get(c, c) for c in shipped.nb_classes],
        shipped.tk_nextmove,
        shipped.tk_output,
        norm_probs=True,
        tk_row=shipped.tk_row,
    )


def clean(text: str) -> str:
    """The text the detector reads: noise removed (see ``_NOISE``), cut to :data:`MAX_CHARS`."""
    return _NOISE.sub(" ", text[: MAX_CHARS * 2])[:MAX_CHARS]


def letter_weight(text: str) -> int:
    """Letters in ``text``, one of another script than Latin counting :data:`OTHER_SCRIPT_WEIGHT`."""
    letters = len(_LETTER.findall(text))
    if text.isascii():
        return letters
    other = max(0, letters - len(_LATIN.findall(text)))
    return letters + (OTHER_SCRIPT_WEIGHT - 1) * other


def detect(text: str) -> tuple[str, float]:
    """``(language, confidence)`` of ``text``; ``("und", 0.0)`` when it has too few letters to tell."""
    cleaned = clean(text)
    if letter_weight(cleaned) < MIN_LETTERS:
        return UND, 0.0
    lang, p = load().classify(cleaned)
    return str(lang), round(float(p), 4)


def probability_of(text: str, languages: Collection[str]) -> float:
    """The detector's probability that ``text`` is in one of ``languages`` (1.0 when it is undetermined).
    The policy asks this only for posts whose top language is unsupported and not confident."""
    cleaned = clean(text)
    if letter_weight(cleaned) < MIN_LETTERS:
        return 1.0
    return float(sum(p for lang, p in load().rank(cleaned) if lang in languages))


def normalize_tag(tag: str | None) -> str | None:
    """A producer's ``lang`` (a BCP 47 tag: ``en``, ``en-US``, ``pt_BR``, ``zh-Hant``) → its primary language
    subtag in lower case, macrolanguage-folded like the detector's codes; None when absent, not a language
    subtag, or one that names no language (``und``, ``mul``, ``zxx``, ``mis``)."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    if not (2 <= len(primary) <= 3 and primary.isascii() and primary.isalpha()) or primary in _NO_LANGUAGE_TAGS:
        return None
    return _MACRO.get(primary, primary)


# ------------------------------------------------------------------------------ the policy's rules


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LanguageRule(_Strict):
    """What happens to a post in a language the model was not trained on."""

    # review: never auto-allowed or auto-blocked (the action becomes `review`); keep: the model's action stands
    action: Literal["review", "keep"] = "review"
    # fire the trigger `unsupported_language`: the post also goes to the LLM-review topic
    escalate: bool = True


class Languages(_Strict):
    """The policy's ``languages:`` section (applied by :func:`assess_language` and ``policy.decide``).

    A post's language is the producer's ``lang`` when ``trust_declared`` (the detected one is recorded beside
    it), else the detected one when the detector is sure enough — its top language at ``min_confidence`` or
    more, or the supported languages together at ``max_supported_prob`` or less — else ``und``, which never
    counts as unsupported on its own.
    """

    enabled: bool = True
    supported: tuple[str, ...] = ("en",)
    trust_declared: bool = True
    min_confidence: float = Field(0.7, ge=0.0, le=1.0)
    max_supported_prob: float = Field(0.01, ge=0.0, le=1.0)
    unsupported: LanguageRule = LanguageRule()
    # language → its own rule instead of `unsupported` (for a language that is not in `supported`)
    per_language: dict[str, LanguageRule] = {}

    @model_validator(mode="after")
    def _codes(self) -> Languages:
        for code in (*self.supported, *self.per_language):
            if normalize_tag(code) != code:
                raise ValueError(
                    f"language {code!r} must be a lower-case ISO 639 code as the detector reports it "
                    "(e.g. 'en', 'es', 'zh'; 'no' for Norwegian Bokmål, 'ar' for any Arabic)"
                )
        overlap = sorted(set(self.per_language) & set(self.supported))
        if overlap:
            raise ValueError(f"per_language names supported languages {overlap}: their posts are decided as usual")
        return self

    def rule_for(self, language: Language) -> LanguageRule | None:
        """The rule for a post's language; None when the post is decided as usual."""
        if language.supported:
            return None
        return self.per_language.get(language.effective, self.unsupported)


def assess_language(rule: Languages, post: Post) -> Language:
    """The language of ``post`` for the policy. Detected always (it is recorded), the producer's ``lang``
    used instead when ``rule.trust_declared``; a detection counts only when sure enough (:class:`Languages`)."""
    detected, confidence = detect(post.text)
    declared = normalize_tag(post.lang)
    if declared is not None and rule.trust_declared:
        effective = declared
    elif detected in rule.supported or detected == UND or confidence >= rule.min_confidence:
        effective = detected
    elif probability_of(post.text, rule.supported) <= rule.max_supported_prob:
        effective = detected  # no one language is sure, but surely none of the supported ones
    else:
        effective = UND
    return Language(effective, detected, confidence, declared, effective == UND or effective in rule.supported)


UNSUPPORTED_REASON = "unsupported language: the model was not trained on the post's language"


def language_reason(rule: Languages, language: Language, lang_rule: LanguageRule, action: Action) -> str:
    """The decision's reason, e.g. ``unsupported language es (detected es 0.97; the model knows en): review
    instead of allow`` — ``action`` is the one the scores gave."""
    if language.declared is not None and rule.trust_declared:
        seen = f"declared by the producer; detected {language.detected} {language.confidence:.2f}"
    else:
        seen = f"detected {language.detected} {language.confidence:.2f}"
    knows = ", ".join(rule.supported) or "no language"
    if lang_rule.action == "keep":
        outcome = f"the model's {action} stands"
    else:
        outcome = "review" if action == "review" else f"review instead of {action}"
    return f"unsupported language {language.effective} ({seen}; the model knows {knows}): {outcome}"
