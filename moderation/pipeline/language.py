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
import unicodedata
from collections.abc import Collection, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moderation.pipeline.records import Action, Language, Post

UND = "und"  # undetermined (BCP 47): too little text to say, or no language in it
MIN_LETTERS = 8  # below this many letters (weighted, see letter_weight) the language is "und"
OTHER_SCRIPT_WEIGHT = 4  # a letter of another script than Latin counts as this many
MAX_CHARS = 300  # the language of a long post is that of its first 300 characters (bounds the cost; the
# English false positives and the sample posts flagged are the same at 200, 300 and 600)

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
_detector: _Detector | None = None
CHUNK = 64  # texts scored together: bounds the per-chunk feature matrix (~4 MiB for 64 posts)


def load() -> _Detector:
    """The detector, loaded once per process (~1 s; ~115 MiB resident). The worker calls this at start-up so
    that the first batch does not pay for it."""
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                _detector = _Detector()
    return _detector


class _Detector:
    """py3langid's model and DFA walk, scored a chunk of texts at a time.

    py3langid's own ``classify`` costs ~15 small numpy calls per text (half of its time on a 150-character
    post); here the naive-Bayes sums, the length-scaled softmax and the merging of classes that share a
    code are done once per chunk, each text's row on its own (so a text's answer never depends on the
    texts scored with it). The same arithmetic as ``LanguageIdentifier.classify`` with ``norm_probs=True``:
    tests hold the two to the same language and a confidence within 1e-4.
    """

    def __init__(self) -> None:
        import numpy as np
        from py3langid.langid import MODEL_FILE, LanguageIdentifier, visit_counts

        shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        # float32: numpy's float16 matrix products are not vectorised (+28 MiB, half the cost of a post)
        self.table = np.ascontiguousarray(shipped.nb_ptc, dtype=np.float32)
        self.prior = np.asarray(shipped.nb_pc, dtype=np.float32)
        self.labels = [_RELABEL.get(c, c) for c in shipped.nb_classes]
        first: dict[str, int] = {}
        self.aliases: list[tuple[int, int]] = []  # (kept, merged) columns of labels that occur more than once
        for i, label in enumerate(self.labels):
            if label in first:
                self.aliases.append((first[label], i))
            else:
                first[label] = i
        nextmove, rowbase, output = shipped.tk_nextmove, [row << 8 for row in shipped.tk_row], shipped.tk_output
        self._walk = lambda data: visit_counts(nextmove, rowbase, output, data)  # keeps not the float16 table

    @staticmethod
    def encode(text: str) -> bytes:
        """As py3langid reads a text: upper-case-only text lowered, NFC, UTF-8."""
        if text.isupper():
            text = text.lower()
        return unicodedata.normalize("NFC", text).encode("utf-8", errors="surrogatepass")

    def probabilities(self, texts: Sequence[str]) -> Any:
        """``[len(texts), len(labels)]`` probabilities (merged classes summed into their first column), a
        row of zeros for a text without features."""
        import numpy as np

        out = np.zeros((len(texts), len(self.table[0])), dtype=np.float32)
        for lo in range(0, len(texts), CHUNK):
            rows: list[int] = []
            starts: list[int] = []
            feats: list[int] = []
            counts: list[int] = []
            sizes: list[int] = []
            for r, text in enumerate(texts[lo : lo + CHUNK]):
                data = self.encode(text)
                visits = self._walk(data)
                if visits:
                    rows.append(lo + r)
                    starts.append(len(feats))
                    feats.extend(visits)
                    counts.extend(visits.values())
                    sizes.append(len(data))
            if not rows:
                continue
            weights = np.log1p(np.asarray(counts, dtype=np.float32))
            contrib = self.table[np.asarray(feats, dtype=np.intp)] * weights[:, None]
            scores = np.add.reduceat(contrib, np.asarray(starts, dtype=np.intp), axis=0) + self.prior
            scores *= (1.0 / np.sqrt(np.asarray(sizes, dtype=np.float32)))[:, None]  # T = sqrt(bytes)
            scores -= scores.max(axis=1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=1, keepdims=True)
            for kept, merged in self.aliases:
                scores[:, kept] += scores[:, merged]
                scores[:, merged] = 0.0
            out[rows] = scores
        return out


def clean(text: str) -> str:
    """The text the detector reads: noise removed (see ``_NOISE``), cut to :data:`MAX_CHARS`."""
    return _NOISE.sub(" ", text[: MAX_CHARS * 2])[:MAX_CHARS]


_ASCII_NON_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())


def letter_weight(text: str) -> int:
    """Letters in ``text``, one of another script than Latin counting :data:`OTHER_SCRIPT_WEIGHT`."""
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_NON_LETTERS))
    letters = len(_LETTER.findall(text))
    other = max(0, letters - len(_LATIN.findall(text)))
    return letters + (OTHER_SCRIPT_WEIGHT - 1) * other


def detect_many(texts: Sequence[str]) -> list[tuple[str, float]]:
    """:func:`detect` of each text, scored together (what the pipeline calls once per batch)."""
    cleaned = [clean(t) for t in texts]
    todo = [i for i, c in enumerate(cleaned) if letter_weight(c) >= MIN_LETTERS]
    found: list[tuple[str, float]] = [(UND, 0.0)] * len(texts)
    if todo:
        detector = load()
        probs = detector.probabilities([cleaned[i] for i in todo])
        tops = probs.argmax(axis=1)
        for i, row, top in zip(todo, probs, tops.tolist(), strict=True):
            if row[top] > 0.0:  # a text with features
                found[i] = (detector.labels[top], round(float(row[top]), 4))
    return found


def detect(text: str) -> tuple[str, float]:
    """``(language, confidence)`` of ``text``; ``("und", 0.0)`` when it has too few letters to tell."""
    return detect_many([text])[0]


def probability_of(text: str, languages: Collection[str]) -> float:
    """The detector's probability that ``text`` is in one of ``languages`` (1.0 when it is undetermined).
    The policy asks this only for posts whose top language is unsupported and not confident."""
    cleaned = clean(text)
    if letter_weight(cleaned) < MIN_LETTERS:
        return 1.0
    detector = load()
    row = detector.probabilities([cleaned])[0]
    return float(sum(float(p) for label, p in zip(detector.labels, row.tolist(), strict=True) if label in languages))


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
    return _assess(rule, post, detect(post.text))


def assess_languages(rule: Languages, posts: Sequence[Post]) -> list[Language]:
    """:func:`assess_language` of each post, detected together (the pipeline's call, once per batch)."""
    return [_assess(rule, p, d) for p, d in zip(posts, detect_many([p.text for p in posts]), strict=True)]


def _assess(rule: Languages, post: Post, detection: tuple[str, float]) -> Language:
    detected, confidence = detection
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
