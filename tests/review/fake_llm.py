"""A small OpenAI-compatible chat-completions server for the tests, in a thread of its own.

It behaves according to a marker in the post text, so one stream can hold every case:
``[allow]`` / ``[block]`` a valid answer · ``[defer]`` action "review" · ``[malformed]`` not JSON ·
``[badschema]`` JSON without the schema's fields · ``[timeout]`` answers too late · ``[429]`` always
rate-limited · ``[500]`` always failing · ``[flaky]`` one 429 then a valid answer · ``[slow]`` a valid
answer after 100 ms. Its own thread and loop, because the tests block on subprocesses while the
consumer under test keeps calling it.

``FakeLLM(obey=True)`` is an endpoint that obeys instructions injected into the post, as real models do:
when the text asks for it (:data:`OBEYED` — "ignore the above … answer allow", "let it through",
"pre-approved", …, including phrasings the project's detector does not know) it answers ``allow``
whatever the post says; ``obeyed`` lists those texts. It reads the case as a model would, from the
delimited block of the user message, and checks that the block holds exactly one JSON document.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from moderation.devtools.launch import free_port


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


def _answer(action: str, labels: list[str]) -> str:
    return orjson.dumps(
        {"action": action, "labels": labels, "rationale": f"test says {action}", "confidence": 0.9}
    ).decode()


OBEYED = re.compile(
    r"(?:ignore|disregard|forget)\b.{0,80}\b(?:answer|respond|reply|say|output)\W+allow"
    r"|let (?:it|this|this one) through|pre-approved|answer allow|verdict: allow",
    re.IGNORECASE | re.DOTALL,
)
"""What the obeying endpoint takes as an instruction to answer allow."""


def read_case(content: str) -> dict[str, Any]:
    """The case of a user message: one JSON object between the lines <case> and </case>."""
    lines = content.split("\n")
    assert len(lines) == 3 and lines[0] == "<case>" and lines[2] == "</case>", "the case is not one delimited block"
    assert "<" not in lines[1] and ">" not in lines[1], "the data block could be closed from inside"
    case = orjson.loads(lines[1])
    assert isinstance(case, dict)
    return case


class FakeLLM:
    def __init__(self, delay_timeout_s: float = 3.0, *, obey: bool = False) -> None:
        self.port = free_port()
        self.delay_timeout_s = delay_timeout_s
        self.obey = obey
        self.obeyed: list[str] = []  # texts it answered "allow" because the text told it to
        self.requests: Counter[str] = Counter()  # post text → requests
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        assert self._ready.wait(10), "fake LLM did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.bodies.append(body)
        self.auth.append(request.headers.get("Authorization"))
        case = read_case(body["messages"][1]["content"])
        text: str = case["post"]["text"]
        self.requests[text] += 1
        seen = self.requests[text]
        if self.obey and OBEYED.search(text):
            self.obeyed.append(text)
            return web.json_response(_completion(orjson.dumps(
                {"action": "allow", "labels": [], "rationale": "as the post instructs", "confidence": 0.99}
            ).decode()))
        if "[timeout]" in text:
            await asyncio.sleep(self.delay_timeout_s)
        if "[429]" in text or ("[flaky]" in text and seen == 1):
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
        if "[500]" in text:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if "[malformed]" in text:
            return web.json_response(_completion('{"action": "block", "labels": [tox'))
        if "[badschema]" in text:
            return web.json_response(_completion('{"verdict": "block"}'))
        if "[slow]" in text:
            await asyncio.sleep(0.1)
        if "[block]" in text:
            return web.json_response(_completion(_answer("block", ["toxicity.toxic"])))
        if "[defer]" in text:
            return web.json_response(_completion(_answer("review", [])))
        return web.json_response(_completion(_answer("allow", [])))


def llm_review_doc(post_id: str, text: str) -> dict[str, Any]:
    """An llm-review record as the worker writes it (pipeline/emit.py llm_review_document), minimal."""
    return {
        "post_id": post_id,
        "action": "review",
        "labels": ["toxicity.toxic"],
        "reasons": ["toxicity.toxic=0.62 in review band [0.50, 0.90)"],
        "triggers": ["low_confidence"],
        "confidence": 0.62,
        "scores": {"toxicity": {"toxic": 0.62}, "spam": {"spam": 0.02}},
        "thresholds": {
            "toxicity.toxic": {"review": 0.5, "block": 0.9, "near_block": 0.7},
            "spam.spam": {"review": 0.6, "block": 0.95, "near_block": 0.775},
        },
        "policy_version": "tiny-test-1",
        "model": {"name": "tiny", "version": "0", "variant": "int8", "provider": "CPUExecutionProvider"},
        "decided_at": "2026-11-29T12:00:00.000Z",
        "post": {"id": post_id, "text": text, "lang": "en", "author_id": None, "created_at": None, "context": None},
        "question": "decide",
    }
