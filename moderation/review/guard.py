"""What an LLM verdict may change, and when it counts as agreed — pure rules, shared by the LLM consumer,
the console and the training export.

The LLM reads untrusted text, so its answer is evidence, not authority. Three rules:

1. **Injection**: a post whose text (or producer context) the detector flags
   (``moderation.pipeline.injection``), or that the worker already flagged (trigger ``prompt_injection``),
   gets no LLM verdict at all: the LLM is not asked, the post goes to people (``prompt_injection``).
2. **Contradiction** (:func:`contradiction`): an LLM ``allow`` is not applied — the post goes to people
   (``llm_contradicts_slm``) — when the SLM blocked the post, or any label's score is at or above its
   *near-block* point ``review + near_block × (block − review)`` (the upper half of the review band under
   the default policy), using the thresholds in force that the llm-review record carries. A record
   without readable thresholds (an older worker) lets an ``allow`` through only when the SLM itself
   allowed and no label fired. An LLM ``block`` is applied: it never lowers severity. An LLM ``review``
   goes to people anyway (``llm_deferred``).
3. **Agreement** (:func:`slm_agrees`), for training: an LLM verdict becomes a training label only when the
   SLM leaned the same way (see :func:`slm_leaning`) — for ``block``, with a label in common.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from moderation.pipeline.injection import injection_signals

PROMPT_INJECTION = "prompt_injection"
LLM_CONTRADICTS_SLM = "llm_contradicts_slm"

_MAX_CONTEXT_CHARS = 20_000  # of producer context scanned per post (it is bounded upstream as well)


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif depth < 8 and isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 8 and isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


def injection_in(doc: dict[str, Any]) -> tuple[str, ...]:
    """Why an llm-review record must not reach the LLM: the worker's ``prompt_injection`` trigger, and the
    detector's signals on the post's text and the strings of its context (what the prompt would carry)."""
    found: list[str] = []
    triggers = doc.get("triggers")
    if isinstance(triggers, list) and PROMPT_INJECTION in triggers:
        found.append("trigger")
    post = doc.get("post")
    if not isinstance(post, dict):
        post = {}
    text = post.get("text")
    if isinstance(text, str):
        found += injection_signals(text)
    budget = _MAX_CONTEXT_CHARS
    for value in _strings(post.get("context")):
        if budget <= 0:
            break
        found += injection_signals(value[:budget])
        budget -= len(value)
    return tuple(dict.fromkeys(found))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def contradiction(doc: dict[str, Any], action: str) -> str | None:
    """Why the LLM's ``action`` must not be applied to the post of this llm-review record (one line, no
    post text), or None when it may be."""
    if action != "allow":
        return None  # block keeps or raises severity; review goes to people anyway
    slm_action = doc.get("action")
    labels = _list(doc.get("labels"))
    if slm_action == "block":
        return f"the SLM blocked it ({', '.join(map(str, labels)) or 'no label named'})"
    thresholds, scores = doc.get("thresholds"), doc.get("scores")
    if not isinstance(thresholds, dict) or not thresholds or not isinstance(scores, dict):
        if slm_action == "allow" and not labels:
            return None
        return f"the record carries no thresholds to check an allow against (SLM {slm_action}, labels {labels})"
    for name, limits in sorted(thresholds.items()):
        task, _, label = str(name).partition(".")
        task_scores = scores.get(task)
        p = _number(task_scores.get(label)) if isinstance(task_scores, dict) else None
        if p is None:
            continue  # the model does not score this label
        block = _number(limits.get("block")) if isinstance(limits, dict) else None
        near = _number(limits.get("near_block")) if isinstance(limits, dict) else None
        if block is None or near is None:
            return f"the thresholds of {name} are unreadable"
        if p >= block:
            return f"{name}={p:.2f} ≥ block {block:.2f}"
        if p >= near:
            return f"{name}={p:.2f} near block (≥ {near:.2f}, block {block:.2f})"
    return None


def slm_leaning(slm: dict[str, Any] | None) -> str | None:
    """What the SLM leaned to: its action, or for ``review`` block when labels fired, else allow."""
    if not slm:
        return None
    action = slm.get("action")
    if action in ("allow", "block"):
        return str(action)
    if action == "review":
        return "block" if slm.get("labels") else "allow"
    return None


def slm_agrees(slm: dict[str, Any] | None, action: str, labels: list[str]) -> bool:
    """Whether the SLM decision ``slm`` (a verdict's ``overrides``) is a second signal for an LLM verdict:
    it leaned the same way, and for ``block`` it flagged a label the LLM names too."""
    if slm_leaning(slm) != action or slm is None:
        return False
    if action == "block":
        return bool(set(map(str, _list(slm.get("labels")))) & set(labels))
    return True
