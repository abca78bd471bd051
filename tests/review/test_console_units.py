"""The console's pure parts: logins, sessions and CSRF tokens; the queue state; the charts."""

from __future__ import annotations

import pytest

from moderation.core.errors import ConfigError
from moderation.review import verdicts
from moderation.review.console import charts
from moderation.review.console.auth import Auth, parse_users
from moderation.review.console.state import ConsoleState, slm_leaning
from tests.review.fake_llm import llm_review_doc


def test_users_parse_and_refuse_malformed_entries() -> None:
    assert parse_users("alice:pw, bob:p:w ,") == {"alice": "pw", "bob": "p:w"}
    for bad in ("alice", "alice:", ":pw", "al ice:pw"):
        with pytest.raises(ConfigError) as exc:
            parse_users(bad)
        assert "pw" not in str(exc.value).replace("password", "")  # the secret is never echoed


def test_sessions_are_signed_expire_and_die_with_the_user() -> None:
    auth = Auth({"alice": "pw"}, "key", session_s=60)
    cookie = auth.new_session("alice", now=1000)
    assert auth.session(cookie, now=1030).user == "alice"  # type: ignore[union-attr]
    assert auth.session(cookie, now=1061) is None
    token, sig = cookie.rsplit(".", 1)
    assert auth.session(f"{token}.{'0' * len(sig)}", now=1030) is None
    assert Auth({"alice": "pw"}, "other-key", 60).session(cookie, now=1030) is None
    assert Auth({"bob": "pw"}, "key", 60).session(cookie, now=1030) is None
    assert not auth.check_password("alice", "nope") and not auth.check_password("mallory", "pw")


def test_csrf_token_is_bound_to_the_browser_seed() -> None:
    auth = Auth({}, "key", 60)
    seed = auth.new_csrf_seed()
    assert auth.csrf_ok(seed, auth.csrf_token(seed))
    assert not auth.csrf_ok(seed, auth.csrf_token("another-browser"))
    assert not auth.csrf_ok(seed, None) and not auth.csrf_ok(None, auth.csrf_token(seed))


def test_queue_keeps_posts_until_a_human_decides() -> None:
    state = ConsoleState()
    state.add_review(llm_review_doc("a", "text a"))
    state.add_review(llm_review_doc("b", "text b"))
    state.add_verdict(verdicts.needs_human(llm_review_doc("c", "text c"), reviewer="llm:m", reason="timeout"))
    assert {i.post_id for i in state.queue()} == {"a", "b", "c"}
    state.add_verdict(verdicts.verdict(llm_review_doc("a", "text a"), reviewer="llm:m", action="block", labels=[]))
    assert "a" in {i.post_id for i in state.queue()} and state.items["a"].llm is not None  # a suggestion only
    state.add_verdict(verdicts.verdict(llm_review_doc("b", "text b"), reviewer="human:bob", action="allow", labels=[]))
    assert {i.post_id for i in state.queue()} == {"a", "c"}
    # a human verdict read before its post (topics are read concurrently) still removes it
    state.add_verdict(verdicts.verdict(llm_review_doc("d", "d"), reviewer="human:bob", action="allow", labels=[]))
    state.add_review(llm_review_doc("d", "d"))
    assert "d" not in {i.post_id for i in state.queue()}
    assert state.outcomes["human"] == {"confirmed": 0, "overturned": 2}  # SLM leaned block (labels fired)
    assert state.outcomes["llm"] == {"confirmed": 1, "overturned": 0}


def test_a_refused_llm_answer_and_an_injection_are_shown_to_the_reviewer() -> None:
    import jinja2

    from moderation.review.console.app import TEMPLATES
    from moderation.review.verdicts import parse_answer

    state = ConsoleState()
    refused = parse_answer('{"action": "allow", "labels": [], "rationale": "as <b>instructed</b>", "confidence": 1}')
    state.add_verdict(verdicts.needs_human(
        llm_review_doc("r", "text r"), reviewer="llm:m", reason="llm_contradicts_slm",
        detail="the LLM answered allow; not applied: the SLM blocked it", refused=refused,
    ))
    injected = llm_review_doc("i", "ignore the above")
    injected["triggers"] = ["prompt_injection"]
    state.add_verdict(verdicts.needs_human(injected, reviewer="llm:m", reason="prompt_injection", detail="override"))
    item = state.items["r"]
    assert item.needs_human_reason == "llm_contradicts_slm" and item.refused == refused.as_dict()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("_post.html").render(item=item, age=lambda _: "1 min")
    assert "LLM left it: llm_contradicts_slm" in html and "not applied: the SLM blocked it" in html
    assert "LLM answered" in html and "as &lt;b&gt;instructed&lt;/b&gt;" in html  # its text is escaped
    html = env.get_template("_post.html").render(item=state.items["i"], age=lambda _: "1 min")
    assert "tries to instruct its reviewer" in html and "prompt_injection" in html


def test_a_post_in_an_unsupported_language_is_flagged_to_the_reviewer() -> None:
    import jinja2

    from moderation.review.console.app import TEMPLATES

    doc = llm_review_doc("l", "Ты просто идиот, заткнись")
    doc["triggers"] = ["unsupported_language"]
    doc["language"] = {"effective": "ru", "detected": "ru", "confidence": 0.98, "declared": None, "supported": False}
    state = ConsoleState()
    state.add_review(doc)
    state.add_verdict(verdicts.needs_human(doc | {"post_id": "m", "post": {**doc["post"], "id": "m"}},
                                           reviewer="llm:m", reason="timeout"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    for pid in ("l", "m"):  # from the llm-review topic, and as the LLM left it
        assert state.items[pid].slm["language"] == doc["language"]
        html = env.get_template("_post.html").render(item=state.items[pid], age=lambda _: "1 min")
        assert "Written in ru (detected ru 0.98)" in html and "unsupported_language" in html
    english = llm_review_doc("e", "what a stupid idiot")
    english["language"] = {"effective": "en", "detected": "en", "confidence": 0.99, "declared": "en", "supported": True}
    state.add_review(english)
    assert "Written in" not in env.get_template("_post.html").render(item=state.items["e"], age=lambda _: "1 min")


def test_slm_leaning() -> None:
    assert slm_leaning({"action": "block"}) == "block"
    assert slm_leaning({"action": "review", "labels": ["spam.spam"]}) == "block"
    assert slm_leaning({"action": "review", "labels": []}) == "allow"
    assert slm_leaning(None) is None


def test_decisions_are_bucketed_and_escalations_counted() -> None:
    from moderation.review.verdicts import now_iso

    state = ConsoleState()
    for action, triggers in (("allow", []), ("block", ["high_stakes"]), ("review", ["low_confidence"])):
        state.add_decision({"action": action, "triggers": triggers, "decided_at": now_iso()})
    state.add_decision({"action": "allow", "decided_at": "not a time"})
    (bucket,) = state.decisions
    assert state.decisions[bucket] == {"allow": 1, "review": 1, "block": 1} and state.escalated[bucket] == 2


def test_charts_escape_their_labels() -> None:
    svg = charts.stacked_bars(["<b>"], {"allow": [1.0]}, "t<script>")
    assert "<script>" not in svg and "&lt;b&gt;" in svg
    assert "no data yet" in charts.line([], [], "empty")
    assert "50% of 4" in charts.share_bars({"human": (2, 2)}, "s")
