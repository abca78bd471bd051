"""The discovery document of ``commentanalyzer`` v1alpha1, served at ``/$discovery/rest?version=v1alpha1``.

Google's API clients build their ``comments().analyze()`` from this document
(``discovery.build("commentanalyzer", "v1alpha1", discoveryServiceUrl=URL, developerKey=KEY)``), so code
written for Perspective only changes its URL. Written from the public format (discoveryVersion v1, one
resource ``comments`` with ``analyze``; the schemas of the request and response); ``rootUrl`` is this
server as the client reached it. ``suggestscore`` is listed, as in Perspective's document, and answered 501.
"""

from __future__ import annotations

from typing import Any

from moderation import __version__

API_NAME = "commentanalyzer"
API_VERSION = "v1alpha1"

_SCORE_TYPES = ["SCORE_TYPE_UNSPECIFIED", "PROBABILITY", "STD_DEV_SCORE", "PERCENTILE", "RAW"]


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _ref(name: str, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"$ref": name}
    if description:
        out["description"] = description
    return out


def _query(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "location": "query", "description": description, **extra}


def _method(name: str, description: str, request: str, response: str) -> dict[str, Any]:
    path = f"{API_VERSION}/comments:{name}"
    return {
        "id": f"{API_NAME}.comments.{name}",
        "path": path,
        "flatPath": path,
        "httpMethod": "POST",
        "description": description,
        "parameters": {},
        "parameterOrder": [],
        "request": {"$ref": request},
        "response": {"$ref": response},
    }


def _schemas() -> dict[str, Any]:
    text_entry = {
        "id": "TextEntry",
        "type": "object",
        "description": "A body of text.",
        "properties": {
            "text": _str("UTF-8 text."),
            "type": {
                "type": "string",
                "description": "Only PLAIN_TEXT (or unspecified) is accepted.",
                "enum": ["TEXT_TYPE_UNSPECIFIED", "PLAIN_TEXT", "HTML"],
            },
        },
    }
    score = {
        "id": "Score",
        "type": "object",
        "description": "A score: a value and its type.",
        "properties": {
            "value": {"type": "number", "format": "float", "description": "Calibrated probability in [0, 1]."},
            "type": {"type": "string", "enum": _SCORE_TYPES, "description": "Always PROBABILITY here."},
        },
    }
    span_score = {
        "id": "SpanScore",
        "type": "object",
        "description": "A score of a span of the text (this server returns none).",
        "properties": {
            "begin": {"type": "integer", "format": "int32"},
            "end": {"type": "integer", "format": "int32"},
            "score": _ref("Score"),
        },
    }
    attribute_scores = {
        "id": "AttributeScores",
        "type": "object",
        "description": "The score of one attribute.",
        "properties": {
            "summaryScore": _ref("Score", "The score of the whole comment."),
            "spanScores": {"type": "array", "items": _ref("SpanScore")},
        },
    }
    attribute_parameters = {
        "id": "AttributeParameters",
        "type": "object",
        "description": "Options of one requested attribute.",
        "properties": {
            "scoreType": {"type": "string", "enum": _SCORE_TYPES, "description": "Only PROBABILITY (the default)."},
            "scoreThreshold": {
                "type": "number",
                "format": "float",
                "description": "Leave the attribute out of the answer when its score is below this.",
            },
        },
    }
    article = {
        "id": "ArticleAndParentComment",
        "type": "object",
        "description": "The article and parent comment the comment answers (validated, not used).",
        "properties": {"article": _ref("TextEntry"), "parentComment": _ref("TextEntry")},
    }
    context = {
        "id": "Context",
        "type": "object",
        "description": "What the comment refers to (validated, not used by the models).",
        "properties": {
            "entries": {"type": "array", "items": _ref("TextEntry")},
            "articleAndParentComment": _ref("ArticleAndParentComment"),
        },
    }
    request = {
        "id": "AnalyzeCommentRequest",
        "type": "object",
        "description": "The comment analysis request.",
        "properties": {
            "comment": _ref("TextEntry", "The comment to analyze."),
            "context": _ref("Context"),
            "requestedAttributes": {
                "type": "object",
                "additionalProperties": _ref("AttributeParameters"),
                "description": "Attribute name → options; see the server's README for the attributes it serves.",
            },
            "spanAnnotations": {"type": "boolean", "description": "Advisory; no span scores are returned."},
            "languages": {"type": "array", "items": {"type": "string"}, "description": "BCP 47 / ISO 639 codes."},
            "doNotStore": {"type": "boolean", "description": "true: never stored (see the server's audit setting)."},
            "clientToken": _str("Echoed in the response."),
            "sessionId": _str("Accepted, not used."),
            "communityId": _str("Accepted, not used."),
        },
    }
    response = {
        "id": "AnalyzeCommentResponse",
        "type": "object",
        "description": "The comment analysis response.",
        "properties": {
            "attributeScores": {"type": "object", "additionalProperties": _ref("AttributeScores")},
            "languages": {"type": "array", "items": {"type": "string"}},
            "detectedLanguages": {"type": "array", "items": {"type": "string"}},
            "clientToken": _str("The request's clientToken."),
        },
    }
    suggest_request = {
        "id": "SuggestCommentScoreRequest",
        "type": "object",
        "description": "Not supported by this server (answered 501).",
        "properties": {
            "comment": _ref("TextEntry"),
            "attributeScores": {"type": "object", "additionalProperties": _ref("AttributeScores")},
            "clientToken": _str(""),
        },
    }
    suggest_response = {
        "id": "SuggestCommentScoreResponse",
        "type": "object",
        "properties": {"clientToken": _str("")},
    }
    schemas: tuple[dict[str, Any], ...] = (
        text_entry,
        score,
        span_score,
        attribute_scores,
        attribute_parameters,
        article,
        context,
        request,
        response,
        suggest_request,
        suggest_response,
    )
    return {str(s["id"]): s for s in schemas}


def discovery_document(root_url: str) -> dict[str, Any]:
    """The document, with ``rootUrl`` = this server (``http://host:port/``, with the trailing slash)."""
    root = root_url if root_url.endswith("/") else root_url + "/"
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": f"{API_NAME}:{API_VERSION}",
        "name": API_NAME,
        "version": API_VERSION,
        "revision": __version__,
        "title": "Perspective-compatible Comment Analyzer (moderation-workers)",
        "description": "A self-hosted AnalyzeComment: the project's models and policy behind Perspective's "
        "request and response shapes.",
        "protocol": "rest",
        "rootUrl": root,
        "servicePath": "",
        "basePath": "",
        "baseUrl": root,
        "batchPath": "batch",
        "version_module": True,
        "parameters": {
            "key": _query("API key (or the X-Goog-Api-Key header)."),
            "alt": _query("Data format for the response.", default="json", enum=["json"]),
            "prettyPrint": {"type": "boolean", "location": "query", "default": "true", "description": "Ignored."},
            "fields": _query("Ignored: full responses are returned."),
            "quotaUser": _query("Ignored."),
            "$.xgafv": _query("Error format (ignored: v1 errors).", enum=["1", "2"]),
            "access_token": _query("Not accepted: use an API key."),
            "oauth_token": _query("Not accepted: use an API key."),
            "callback": _query("Not supported."),
            "uploadType": _query("Not supported."),
            "upload_protocol": _query("Not supported."),
        },
        "resources": {
            "comments": {
                "methods": {
                    "analyze": _method(
                        "analyze",
                        "Analyzes the provided text and returns scores for requested attributes.",
                        "AnalyzeCommentRequest",
                        "AnalyzeCommentResponse",
                    ),
                    "suggestscore": _method(
                        "suggestscore",
                        "Not supported by this server (501).",
                        "SuggestCommentScoreRequest",
                        "SuggestCommentScoreResponse",
                    ),
                }
            }
        },
        "schemas": _schemas(),
    }
