"""Perspective's AnalyzeComment request and response shapes (pure: moderation.api.perspective, .discovery).

The shapes are those of Perspective's public API reference (methods.md, AnalyzeComment request/response)
and its discovery document; the error messages are the ones its docs list (limits.md) or the API returned.
"""

from __future__ import annotations

from typing import Any

import pytest

from moderation.api.discovery import discovery_document
from moderation.api.errors import ApiError
from moderation.api.perspective import (
    ATTRIBUTES,
    AnalyzeRequest,
    analyze_response,
    decided_language,
    parse_analyze,
    served_attributes,
)
from moderation.pipeline.language import LanguageRule, Languages
from moderation.pipeline.records import Decision, Language

SHIPPED_LABELS = {
    "toxicity": ["toxic", "hate", "targeted"],
    "spam": ["ham", "spam"],
    "category": ["world_politics", "sports"],
}
SERVED = served_attributes(SHIPPED_LABELS)
EN = Languages()


def parse(doc: Any, languages: Languages = EN, max_chars: int = 100) -> AnalyzeRequest:
    return parse_analyze(doc, served=SERVED, languages=languages, max_text_chars=max_chars)


def refused(doc: Any, languages: Languages = EN, max_chars: int = 100) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(doc, languages, max_chars)
    return info.value


def decision(scores: dict[str, dict[str, float]], lang: Language | None) -> Decision:
    return Decision("p", "allow", scores, (), (), (), 0.9, "v1", language=lang)


SCORES = {"toxicity": {"toxic": 0.8627961, "hate": 0.1, "targeted": 0.2}, "spam": {"ham": 0.99, "spam": 0.01}}


def test_the_shipped_model_serves_toxicity_identity_attack_and_spam_only() -> None:
    assert set(SERVED) == {"TOXICITY", "IDENTITY_ATTACK", "SPAM"}
    assert (SERVED["TOXICITY"].task, SERVED["TOXICITY"].label) == ("toxicity", "toxic")
    assert (SERVED["IDENTITY_ATTACK"].task, SERVED["IDENTITY_ATTACK"].label) == ("toxicity", "hate")
    assert (SERVED["SPAM"].task, SERVED["SPAM"].label) == ("spam", "spam")
    # a model with insult/threat labels (the tests' tiny one) serves those too, and loses what it lacks
    tiny = served_attributes({"toxicity": ["toxic", "insult", "threat"], "spam": ["ham", "spam"]})
    assert set(tiny) == {"TOXICITY", "INSULT", "THREAT", "SPAM"}
    assert len({a.name for a in ATTRIBUTES}) == len(ATTRIBUTES)


def test_the_documented_example_request_and_its_response_shape() -> None:
    """methods.md's example: TOXICITY for an English comment; the answer's keys as the reference lists them."""
    req = parse(
        {
            "comment": {"text": "What kind of idiot name is foo? Sorry, I like your name."},
            "languages": ["en"],
            "requestedAttributes": {"TOXICITY": {}},
        }
    )
    assert req.attributes == (("TOXICITY", None),) and req.lang == "en" and req.do_not_store is False
    lang = Language("en", "en", 0.99, "en", True)
    out = analyze_response(req, decision(SCORES, lang), SERVED, EN)
    assert out == {
        "attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.862796, "type": "PROBABILITY"}}},
        "languages": ["en"],
        "detectedLanguages": ["en"],
    }


def test_every_request_field_in_both_spellings_and_the_client_token_echoed() -> None:
    req = parse(
        {
            "comment": {"text": "hello there", "type": "PLAIN_TEXT"},
            "context": {"entries": [{"text": "the article", "type": "PLAIN_TEXT"}]},
            "requested_attributes": {"SPAM": {"score_type": "PROBABILITY"}, "TOXICITY": {"scoreThreshold": 0.9}},
            "span_annotations": True,
            "languages": ["en-US"],
            "do_not_store": True,
            "client_token": "comment-53922",
            "session_id": "s-1",
            "communityId": "/forum/movies",
        }
    )
    assert req.attributes == (("SPAM", None), ("TOXICITY", 0.9))
    assert req.do_not_store and req.client_token == "comment-53922" and req.lang == "en"
    out = analyze_response(req, decision(SCORES, None), SERVED, EN)
    # TOXICITY 0.86 is below its requested threshold 0.9: left out, as Perspective does
    assert list(out["attributeScores"]) == ["SPAM"]
    assert out["clientToken"] == "comment-53922" and out["languages"] == ["en-US"] and out["detectedLanguages"] == []


def test_without_languages_the_answer_names_the_detected_one() -> None:
    req = parse({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}})
    assert req.lang is None and req.languages == ()
    out = analyze_response(req, decision(SCORES, Language("en", "en", 0.93, None, True)), SERVED, EN)
    assert out["languages"] == ["en"] and out["detectedLanguages"] == ["en"]


@pytest.mark.parametrize(
    ("doc", "message", "error_type"),
    [
        ({"requestedAttributes": {"TOXICITY": {}}}, "Comment must be non-empty.", "COMMENT_EMPTY"),
        (
            {"comment": {"text": ""}, "requestedAttributes": {"TOXICITY": {}}},
            "Comment must be non-empty.",
            "COMMENT_EMPTY",
        ),
        (
            {"comment": {"text": " \n"}, "requestedAttributes": {"TOXICITY": {}}},
            "Comment must be non-empty.",
            "COMMENT_EMPTY",
        ),
        (
            {"comment": {"text": "x" * 101}, "requestedAttributes": {"TOXICITY": {}}},
            "Comment text too long.",
            "COMMENT_TOO_LONG",
        ),
        ({"comment": {"text": "hi"}}, "Missing requested_attributes.", "REQUESTED_ATTRIBUTES_MISSING"),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {}},
            "Missing requested_attributes.",
            "REQUESTED_ATTRIBUTES_MISSING",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"FOO": {}}},
            "Unknown requested attribute: FOO",
            "UNKNOWN_REQUESTED_ATTRIBUTE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"INSULT": {}}},
            "Unknown requested attribute: INSULT",
            "UNKNOWN_REQUESTED_ATTRIBUTE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"SEVERE_TOXICITY": {}}},
            "Unknown requested attribute: SEVERE_TOXICITY",
            "UNKNOWN_REQUESTED_ATTRIBUTE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreType": "RAW"}}},
            "Requested score type RAW is not supported by attribute TOXICITY",
            "SCORE_TYPE_NOT_SUPPORTED",
        ),
        (
            {"comment": {"text": "<b>hi</b>", "type": "HTML"}, "requestedAttributes": {"TOXICITY": {}}},
            "Currently, only 'PLAIN_TEXT' comments are supported",
            "COMMENT_TYPE_NOT_SUPPORTED",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["es"]},
            "Attribute TOXICITY does not support request languages: es",
            "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "bogus": 1},
            'Unknown name "bogus": Cannot find field.',
            "INVALID_JSON",
        ),
        (
            {"comment": {"text": "hi", "lang": "en"}, "requestedAttributes": {"TOXICITY": {}}},
            'Unknown name "comment.lang"',
            "INVALID_JSON",
        ),
        (
            {"comment": {"text": 5}, "requestedAttributes": {"TOXICITY": {}}},
            "Invalid value at 'comment.text' (TYPE_STRING)",
            "INVALID_VALUE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreThreshold": "0.5"}}},
            "(TYPE_FLOAT)",
            "INVALID_VALUE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "doNotStore": "yes"},
            "(TYPE_BOOL)",
            "INVALID_VALUE",
        ),
        (
            {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "languages": "en"},
            "'languages'",
            "INVALID_VALUE",
        ),
        ({"comment": {"text": "hi"}, "requestedAttributes": ["TOXICITY"]}, "requested_attributes", "INVALID_VALUE"),
        (
            {
                "comment": {"text": "hi"},
                "requestedAttributes": {"TOXICITY": {}},
                "context": {"entries": [], "articleAndParentComment": {}},
            },
            "Context can have either entries or article_and_parent_comment",
            "INVALID_VALUE",
        ),
        ([1, 2], "Expected an object", "INVALID_JSON"),
        ("text", "Expected an object", "INVALID_JSON"),
    ],
)
def test_bad_requests_get_perspectives_400s(doc: Any, message: str, error_type: str) -> None:
    exc = refused(doc)
    body = exc.body()["error"]
    assert exc.http == 400 and body["code"] == 400 and body["status"] == "INVALID_ARGUMENT"
    assert message in body["message"], body["message"]
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.commentanalyzer.v1alpha1.Error"
    assert detail["errorType"] == error_type


def test_an_unserved_attribute_is_explained_never_scored() -> None:
    message = refused({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}, "INSULT": {}}}).message
    assert "no insult label" in message and "served: IDENTITY_ATTACK, SPAM, TOXICITY" in message


def test_languages_the_policy_scores_and_those_it_does_not() -> None:
    keep_es = Languages(per_language={"es": LanguageRule(action="keep")})
    assert decided_language(["de", "en-GB"], EN) == "en"  # the first supported one decides
    assert decided_language(["de"], EN) == "de"  # refused by parse_analyze
    assert decided_language(["es"], keep_es) == "es"  # the operator keeps the model's word in Spanish
    assert decided_language(["und", "??"], EN) is None  # no language in them: detection decides
    assert (
        parse({"comment": {"text": "hola"}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["es"]}, keep_es).lang
        == "es"
    )
    # a detection the policy does not score: the unsupported-language error, with the detected language
    req = parse({"comment": {"text": "hola amigos"}, "requestedAttributes": {"IDENTITY_ATTACK": {}}})
    with pytest.raises(ApiError) as info:
        analyze_response(req, decision(SCORES, Language("es", "es", 0.97, None, False)), SERVED, EN)
    detail = info.value.body()["error"]["details"][0]
    assert info.value.message == "Attribute IDENTITY_ATTACK does not support request languages: es"
    assert detail["languageNotSupportedByAttributeError"] == {
        "detectedLanguages": ["es"],
        "attribute": "IDENTITY_ATTACK",
    }
    # undetermined (emoji only, "ok lol") is decided as usual, as the worker decides it
    out = analyze_response(req, decision(SCORES, Language("und", "und", 0.0, None, True)), SERVED, EN)
    assert out["detectedLanguages"] == ["und"]


def test_the_discovery_document_describes_analyze_at_this_server() -> None:
    doc = discovery_document("http://127.0.0.1:8000")
    assert doc["kind"] == "discovery#restDescription" and doc["discoveryVersion"] == "v1"
    assert (doc["name"], doc["version"], doc["rootUrl"]) == ("commentanalyzer", "v1alpha1", "http://127.0.0.1:8000/")
    analyze = doc["resources"]["comments"]["methods"]["analyze"]
    assert (analyze["httpMethod"], analyze["path"]) == ("POST", "v1alpha1/comments:analyze")
    assert analyze["request"] == {"$ref": "AnalyzeCommentRequest"}
    request = doc["schemas"]["AnalyzeCommentRequest"]["properties"]
    assert {"comment", "requestedAttributes", "languages", "doNotStore", "clientToken", "sessionId"} <= set(request)
    response = doc["schemas"]["AnalyzeCommentResponse"]["properties"]
    assert set(response) == {"attributeScores", "languages", "detectedLanguages", "clientToken"}
    for schema in doc["schemas"].values():  # every $ref resolves
        for prop in schema["properties"].values():
            for ref in (
                prop.get("$ref"),
                prop.get("items", {}).get("$ref"),
                prop.get("additionalProperties", {}).get("$ref"),
            ):
                assert ref is None or ref in doc["schemas"]
