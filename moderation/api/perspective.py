"""Perspective's AnalyzeComment, read and answered (pure: no I/O, no model).

The request and response shapes are those of the public ``commentanalyzer`` v1alpha1 API (its discovery
document, :mod:`moderation.api.discovery`): ``comment.text``, ``requestedAttributes``, ``languages``,
``doNotStore``, ``clientToken``, ``sessionId``, … in; ``attributeScores.<ATTR>.summaryScore {value, type:
PROBABILITY}``, ``languages``, ``detectedLanguages``, ``clientToken`` out. Field names are accepted in
proto3 JSON's two spellings (``requestedAttributes`` and ``requested_attributes``); an unknown name is an
error, as Google's own JSON parser makes it.

Attributes map to the served model's labels by :data:`ATTRIBUTES`, and only when the loaded model has
that label: an attribute without one is refused with Perspective's unknown-attribute error, never given a
made-up score.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from moderation.api.errors import ApiError, invalid
from moderation.pipeline.language import Languages, normalize_tag
from moderation.pipeline.records import Decision


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str  # Perspective's attribute name
    task: str
    label: str
    meaning: str  # what the label was trained on, for the README's table


# Perspective attribute → the model label that is the same idea. An attribute is served only when the loaded
# model has its label (the shipped moderation-minilm has toxic, hate and spam; INSULT and THREAT are served by
# models that have labels of those names, such as the tests' tiny model).
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("TOXICITY", "toxicity", "toxic", "offensive / toxic (OLID level A, Jigsaw-style toxicity sets)"),
    Attribute("IDENTITY_ATTACK", "toxicity", "hate", "hate speech against a protected group (HatEval, HateXplain, …)"),
    Attribute("SPAM", "spam", "spam", "commercial / scam spam (SMS Spam, ScamSpot, synthetic comment spam)"),
    Attribute("INSULT", "toxicity", "insult", "only for a model with a toxicity.insult label"),
    Attribute("THREAT", "toxicity", "threat", "only for a model with a toxicity.threat label"),
)

# Perspective's other attributes: known names, no label for them in the shipped model (refused, never guessed).
# toxicity.targeted (OLID level B: an offence aimed at someone) is not INSULT's definition, so it is not mapped.
UNSERVED: dict[str, str] = {
    "SEVERE_TOXICITY": "no severity label; toxicity.toxic does not grade severity",
    "INSULT": "no insult label; toxicity.targeted (an offence aimed at someone, OLID level B) is a different "
    "definition — its score is in /v1/moderate",
    "PROFANITY": "no profanity label",
    "THREAT": "no threat label",
    "SEXUALLY_EXPLICIT": "no sexual-content label",
    "FLIRTATION": "no flirtation label",
    "ATTACK_ON_AUTHOR": "no such label",
    "ATTACK_ON_COMMENTER": "no such label",
    "INCOHERENT": "no such label",
    "INFLAMMATORY": "no such label",
    "LIKELY_TO_REJECT": "no such label",
    "OBSCENE": "no such label",
    "UNSUBSTANTIAL": "no such label",
}

SCORE_TYPES_REFUSED = ("STD_DEV_SCORE", "PERCENTILE", "RAW")
SCORE_TYPES_OK = (None, "SCORE_TYPE_UNSPECIFIED", "PROBABILITY")
TEXT_TYPES_OK = (None, "TEXT_TYPE_UNSPECIFIED", "PLAIN_TEXT")

# proto3 JSON accepts the lowerCamel and the original snake_case name of every field
_REQUEST_FIELDS = {
    "comment": "comment",
    "context": "context",
    "requestedAttributes": "requestedAttributes",
    "requested_attributes": "requestedAttributes",
    "spanAnnotations": "spanAnnotations",
    "span_annotations": "spanAnnotations",
    "languages": "languages",
    "doNotStore": "doNotStore",
    "do_not_store": "doNotStore",
    "clientToken": "clientToken",
    "client_token": "clientToken",
    "sessionId": "sessionId",
    "session_id": "sessionId",
    "communityId": "communityId",
    "community_id": "communityId",
}
_TEXT_ENTRY_FIELDS = {"text": "text", "type": "type"}
_CONTEXT_FIELDS = {
    "entries": "entries",
    "articleAndParentComment": "articleAndParentComment",
    "article_and_parent_comment": "articleAndParentComment",
}
_ARTICLE_FIELDS = {"article": "article", "parentComment": "parentComment", "parent_comment": "parentComment"}
_PARAM_FIELDS = {
    "scoreType": "scoreType",
    "score_type": "scoreType",
    "scoreThreshold": "scoreThreshold",
    "score_threshold": "scoreThreshold",
}
MAX_LANGUAGES = 16
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True, slots=True)
class AnalyzeRequest:
    text: str
    attributes: tuple[tuple[str, float | None], ...]  # (name, scoreThreshold) in request order
    languages: tuple[str, ...]  # as the client sent them (echoed back)
    lang: str | None  # the language the post is decided in (the first supported one requested), or None
    do_not_store: bool
    client_token: str | None


def served_attributes(labels: Mapping[str, Iterable[str]]) -> dict[str, Attribute]:
    """The attributes the loaded model can answer (its labels by task, as ``engine.info()["labels"]``)."""
    have = {(task, label) for task, names in labels.items() for label in names}
    return {a.name: a for a in ATTRIBUTES if (a.task, a.label) in have}


# --- reading the request ------------------------------------------------------------------------------------


def _bad_value(path: str, kind: str, value: Any) -> ApiError:
    shown = repr(value) if isinstance(value, str) else type(value).__name__
    return invalid(f"Invalid value at '{path}' ({kind}), {shown[:80]}", "INVALID_VALUE")


def _fields(doc: Any, names: Mapping[str, str], path: str) -> dict[str, Any]:
    """An object's fields under their canonical names; unknown names and duplicates refused."""
    if not isinstance(doc, dict):
        where = f" at '{path}'" if path else ""
        raise invalid(f"Invalid JSON payload received. Expected an object{where}.", "INVALID_JSON")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        canonical = names.get(key)
        if canonical is None:
            name = f"{path}.{key}" if path else key
            message = f'Invalid JSON payload received. Unknown name "{name[:100]}": Cannot find field.'
            raise invalid(message, "INVALID_JSON")
        if canonical in out:
            raise invalid(f"Invalid JSON payload received. Field '{canonical}' given twice.", "INVALID_JSON")
        out[canonical] = value
    return out


def _string(value: Any, path: str, *, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_value(path, "TYPE_STRING", value)
    if limit is not None and len(value) > limit:
        raise invalid(f"Invalid value at '{path}': at most {limit} characters.", "INVALID_VALUE")
    return value


def _bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad_value(path, "TYPE_BOOL", value)
    return value


def _text_entry(doc: Any, path: str, max_chars: int) -> tuple[str | None, str | None]:
    entry = _fields(doc, _TEXT_ENTRY_FIELDS, path)
    text = _string(entry.get("text"), f"{path}.text")
    kind = _string(entry.get("type"), f"{path}.type")
    if kind == "HTML":
        raise invalid("Currently, only 'PLAIN_TEXT' comments are supported.", "COMMENT_TYPE_NOT_SUPPORTED")
    if kind not in TEXT_TYPES_OK:
        raise invalid(f"Unknown text type {kind!r} at '{path}.type'.", "INVALID_VALUE")
    if text is not None and len(text) > max_chars:
        raise invalid(
            f"Comment text too long. Value ({len(text):,} characters) exceeded limit ({max_chars:,}).",
            "COMMENT_TOO_LONG",
        )
    return text, kind


def _context(doc: Any, max_chars: int) -> None:
    """Validated, then not used: Perspective documents context as not used by its models, and ours is no
    different (it is not the worker's producer ``context``, which the policy reads)."""
    if doc is None:
        return
    context = _fields(doc, _CONTEXT_FIELDS, "context")
    if "entries" in context and "articleAndParentComment" in context:
        raise invalid(
            "Context can have either entries or article_and_parent_comment, but both were specified.", "INVALID_VALUE"
        )
    entries = context.get("entries")
    if entries is not None:
        if not isinstance(entries, list):
            raise _bad_value("context.entries", "TYPE_MESSAGE", entries)
        for i, entry in enumerate(entries):
            _text_entry(entry, f"context.entries[{i}]", max_chars)
    article = context.get("articleAndParentComment")
    if article is not None:
        parts = _fields(article, _ARTICLE_FIELDS, "context.articleAndParentComment")
        for name, part in parts.items():
            if part is not None:
                _text_entry(part, f"context.articleAndParentComment.{name}", max_chars)


def _threshold(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad_value(path, "TYPE_FLOAT", value)
    return float(value)


def _attributes(doc: Any, served: Collection[str]) -> tuple[tuple[str, float | None], ...]:
    if doc is None or (isinstance(doc, dict) and not doc):
        raise invalid("Missing requested_attributes.", "REQUESTED_ATTRIBUTES_MISSING")
    if not isinstance(doc, dict):
        raise _bad_value("requested_attributes", "TYPE_MESSAGE", doc)
    out: list[tuple[str, float | None]] = []
    for name, params in doc.items():
        path = f"requested_attributes[{name[:60]!r}]"
        fields = _fields({} if params is None else params, _PARAM_FIELDS, path)
        score_type = _string(fields.get("scoreType"), f"{path}.score_type")
        threshold = _threshold(fields.get("scoreThreshold"), f"{path}.score_threshold")
        if name not in served:
            offer = ", ".join(sorted(served)) or "none"
            why = UNSERVED.get(name)
            detail = f"this server's models have no label for it ({why})" if why else "not a known attribute"
            raise invalid(
                f"Unknown requested attribute: {name[:100]} — {detail}; served: {offer}.",
                "UNKNOWN_REQUESTED_ATTRIBUTE",
            )
        if score_type in SCORE_TYPES_REFUSED:
            raise invalid(
                f"Requested score type {score_type} is not supported by attribute {name}: only PROBABILITY.",
                "SCORE_TYPE_NOT_SUPPORTED",
            )
        if score_type not in SCORE_TYPES_OK:
            message = f"Invalid value at '{path}.score_type': unknown score type {score_type[:40]!r}."
            raise invalid(message, "INVALID_VALUE")
        out.append((name, threshold))
    return tuple(out)


def decided_language(requested: Iterable[str], rule: Languages) -> str | None:
    """The language the post is decided in: the first requested one the policy scores (a supported language,
    or one whose rule keeps the model's action); else the first requested language at all (it is then refused,
    as Perspective refuses it); None when none was requested (detection decides)."""
    tags = [t for t in (normalize_tag(r) for r in requested) if t is not None]
    for tag in tags:
        if scores_language(tag, rule):
            return tag
    return tags[0] if tags else None


def scores_language(code: str, rule: Languages) -> bool:
    """Whether the API answers with scores for posts in ``code`` (the policy's language rules)."""
    if not rule.enabled or code == "und" or code in rule.supported:
        return True
    own = rule.per_language.get(code)
    return own is not None and own.action == "keep"


def parse_analyze(doc: Any, *, served: Collection[str], languages: Languages, max_text_chars: int) -> AnalyzeRequest:
    """The request, validated, or an :class:`ApiError` (always a 4xx) saying what is wrong with it."""
    fields = _fields(doc, _REQUEST_FIELDS, "")
    comment = fields.get("comment")
    if comment is None:
        raise invalid("Comment must be non-empty.", "COMMENT_EMPTY")
    text, _ = _text_entry(comment, "comment", max_text_chars)
    if text is None or not text.strip():
        raise invalid("Comment must be non-empty.", "COMMENT_EMPTY")
    _context(fields.get("context"), max_text_chars)
    attributes = _attributes(fields.get("requestedAttributes"), served)
    raw_languages = fields.get("languages")
    if raw_languages is None:
        raw_languages = []
    if not isinstance(raw_languages, list):
        raise _bad_value("languages", "TYPE_STRING", raw_languages)
    if len(raw_languages) > MAX_LANGUAGES:
        raise invalid(f"Invalid value at 'languages': at most {MAX_LANGUAGES} languages.", "INVALID_VALUE")
    requested = tuple(_string(v, f"languages[{i}]", limit=64) or "" for i, v in enumerate(raw_languages))
    _bool(fields.get("spanAnnotations"), "span_annotations")  # advisory: no span scores (the models score posts)
    _string(fields.get("sessionId"), "session_id", limit=MAX_TOKEN_CHARS)
    _string(fields.get("communityId"), "community_id", limit=MAX_TOKEN_CHARS)
    lang = decided_language(requested, languages)
    if lang is not None and languages.trust_declared and not scores_language(lang, languages):
        raise unsupported_language(attributes[0][0], list(requested), [])
    return AnalyzeRequest(
        text=text,
        attributes=attributes,
        languages=requested,
        lang=lang,
        do_not_store=_bool(fields.get("doNotStore"), "do_not_store"),
        client_token=_string(fields.get("clientToken"), "client_token", limit=MAX_TOKEN_CHARS),
    )


def unsupported_language(attribute: str, requested: list[str], detected: list[str]) -> ApiError:
    shown = ", ".join(requested or detected) or "und"
    return invalid(
        f"Attribute {attribute} does not support request languages: {shown[:200]}",
        "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
        languageNotSupportedByAttributeError={"detectedLanguages": detected, "attribute": attribute},
    )


# --- answering it -------------------------------------------------------------------------------------------


def analyze_response(
    request: AnalyzeRequest, decision: Decision, served: Mapping[str, Attribute], languages: Languages
) -> dict[str, Any]:
    """Perspective's response for a decided post, or the unsupported-language error when the policy says the
    model does not know the post's language (detected, or requested with ``trust_declared: false``)."""
    language = decision.language
    detected = [language.detected] if language is not None else []
    if language is not None and not scores_language(language.effective, languages):
        raise unsupported_language(request.attributes[0][0], list(request.languages), detected)
    scores: dict[str, Any] = {}
    for name, threshold in request.attributes:
        attribute = served[name]
        value = float(decision.scores[attribute.task][attribute.label])
        if threshold is not None and value < threshold:
            continue  # Perspective leaves out a score below the requested threshold
        scores[name] = {"summaryScore": {"value": round(value, 6), "type": "PROBABILITY"}}
    answered = list(request.languages) or ([language.effective] if language is not None else [])
    out: dict[str, Any] = {"attributeScores": scores, "languages": answered, "detectedLanguages": detected}
    if request.client_token is not None:
        out["clientToken"] = request.client_token
    return out
