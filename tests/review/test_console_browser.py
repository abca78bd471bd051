"""The reviewer console in a real browser (Debian's chromium + chromedriver, via selenium), on the real broker.

Two console replicas run as processes, as in Kubernetes. A reviewer logs in to one, sees a queued post,
blocks it; the verdict is on the verdicts topic and the post leaves the other replica's queue.
Anonymous requests and forged (no CSRF token) actions are refused. ``MODERATION_CONSOLE_SCREENSHOTS=DIR``
saves the queue and the overview as PNGs there (that is how docs/console-*.png are made).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from moderation.devtools.launch import free_port
from moderation.review import verdicts
from tests.conftest import TopicFactory
from tests.review.fake_llm import llm_review_doc
from tests.review.proc import ReviewProcess
from tests.worker.harness import produce, read_topic

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TEXTS = {
    "q-1": "you are a complete moron and everyone here knows it",
    "q-2": "limited offer!!! claim your free prize at the link now",
    "q-3": "honestly the referee was blind tonight, worst call of the season",
}


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed: run `make browser` (deploy/tools/install-browser.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def review_doc(post_id: str, text: str, minutes_ago: float, labels: list[str]) -> dict[str, Any]:
    doc = llm_review_doc(post_id, text)
    doc.update(labels=labels, decided_at=iso(datetime.now(tz=UTC) - timedelta(minutes=minutes_ago)))
    return doc


def history(n: int = 240) -> list[tuple[bytes, bytes]]:
    """Audit records over the last two hours, for the overview's charts."""
    now = datetime.now(tz=UTC)
    out = []
    for i in range(n):
        action = "block" if i % 9 == 0 else "review" if i % 5 == 0 else "allow"
        triggers = ["low_confidence"] if i % 6 == 0 else []
        doc = {"post_id": f"h{i}", "action": action, "triggers": triggers,
               "decided_at": iso(now - timedelta(minutes=120 * (n - i) / n))}
        out.append((f"h{i}".encode(), orjson.dumps(doc)))
    return out


async def login(session: aiohttp.ClientSession, base: str, user: str, password: str) -> None:
    async with session.get(f"{base}/login") as resp:
        page = await resp.text()
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    async with session.post(f"{base}/login", data={"csrf_token": token, "username": user, "password": password},
                            allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()


async def test_reviewer_blocks_a_post_in_a_real_browser(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    review, verdict_topic, decisions = await topic_factory(2), await topic_factory(2), await topic_factory(2)
    minutes = {"q-1": 42, "q-2": 17, "q-3": 5}
    labels = {"q-1": ["toxicity.toxic"], "q-2": ["spam.spam"], "q-3": []}
    await produce(kafka_bootstrap, review, [
        (pid.encode(), orjson.dumps(review_doc(pid, text, minutes[pid], labels[pid]))) for pid, text in TEXTS.items()
    ])
    # one the LLM left for humans, one the LLM confirmed and a person decided earlier (overview data)
    left = verdicts.needs_human(review_doc("q-4", "is this satire or a threat? hard to say", 3, []),
                                reviewer="llm:fake-7b", reason="timeout")
    done = review_doc("q-0", "an older post", 90, ["toxicity.toxic"])
    await produce(kafka_bootstrap, verdict_topic, [
        verdicts.encode(left)[:2],
        verdicts.encode(verdicts.verdict(done, reviewer="llm:fake-7b", action="block", labels=["toxicity.toxic"]))[:2],
        verdicts.encode(verdicts.verdict(done, reviewer="human:bob", action="allow", labels=[]))[:2],
    ])
    await produce(kafka_bootstrap, decisions, history())
    env = {
        "MODERATION_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MODERATION_REVIEW_TOPIC": review,
        "MODERATION_VERDICTS_TOPIC": verdict_topic,
        "MODERATION_DECISIONS_TOPIC": decisions,
        "MODERATION_CONSOLE_USERS": "alice:correct-horse,bob:battery-staple",
        "MODERATION_CONSOLE_SECRET_KEY": "test-signing-key",
        "MODERATION_CACHE_DIR": str(tmp_path / "cache"),
    }
    ports = free_port(), free_port()
    replicas = [
        ReviewProcess(f"console-{i}", ["console"], env | {"MODERATION_CONSOLE_PORT": str(port)}, tmp_path)
        for i, port in enumerate(ports)
    ]
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        await asyncio.gather(*(r.wait_ready() for r in replicas))

        # anonymous: no page, no action
        async with aiohttp.ClientSession() as anon:
            async with anon.get(f"{a}/", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/login"
            async with anon.get(f"{a}/overview", allow_redirects=False) as resp:
                assert resp.status == 303
            async with anon.post(f"{a}/decide", data={"post_id": "q-2", "action": "block"}) as resp:
                assert resp.status == 403

        # the browser: log in, see the queue, block q-1 with a corrected label
        await asyncio.to_thread(browser.get, f"{a}/login")
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys("correct-horse")
        await asyncio.to_thread(browser.find_element(By.ID, "login").click)
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card.queued"))
        cards = browser.find_elements(By.CSS_SELECTOR, ".card.queued")
        assert [c.get_attribute("data-post-id") for c in cards] == ["q-1", "q-2", "q-3", "q-4"]  # oldest first
        assert TEXTS["q-1"] in cards[0].text and "low_confidence" in cards[0].text and "tiny-test-1" in cards[0].text
        assert "LLM left it: timeout" in cards[3].text
        shots = os.environ.get("MODERATION_CONSOLE_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(shots) / "console-queue.png"))
        await asyncio.to_thread(cards[0].find_element(By.CSS_SELECTOR, "a.decide").click)
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.ID, "block"))
        browser.find_element(By.CSS_SELECTOR, "input[value='toxicity.hate']").click()
        await asyncio.to_thread(browser.find_element(By.ID, "block").click)
        flash = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "flash"))
        assert "Verdict recorded for post q-1" in flash.text
        queued = [c.get_attribute("data-post-id") for c in browser.find_elements(By.CSS_SELECTOR, ".card.queued")]
        assert "q-1" not in queued

        # forged actions with alice's real session: no CSRF token, and a token for another browser
        cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
        async with aiohttp.ClientSession(cookies=cookies) as forged:
            async with forged.post(f"{a}/decide", data={"post_id": "q-2", "action": "block"}) as resp:
                assert resp.status == 403
            async with forged.post(f"{a}/decide", data={"post_id": "q-2", "action": "block",
                                                        "csrf_token": "0" * 64}) as resp:
                assert resp.status == 403

        # the verdict on the broker, and the post gone from the other replica's queue
        records = await read_topic(kafka_bootstrap, verdict_topic, expect=4, timeout_s=30, strict=True)
        mine = [orjson.loads(r.value) for r in records if r.key == b"q-1"]
        assert len(mine) == 1 and not [r for r in records if r.key == b"q-2"], "a forged action wrote a verdict"
        v = mine[0]
        assert (v["kind"], v["reviewer"], v["action"]) == ("verdict", "human:alice", "block")
        assert v["labels"] == ["toxicity.hate", "toxicity.toxic"]
        assert v["overrides"]["action"] == "review" and v["overrides"]["labels"] == ["toxicity.toxic"]
        assert v["post"]["text"] == TEXTS["q-1"] and v["decided_at"]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:  # IP hosts
            await login(other, b, "bob", "battery-staple")
            deadline = time.monotonic() + 20
            while True:
                async with other.get(f"{b}/") as resp:
                    page = await resp.text()
                if 'data-post-id="q-1"' not in page:
                    break
                assert time.monotonic() < deadline, "the decided post stayed in the other replica's queue"
                await asyncio.sleep(0.5)
            assert 'data-post-id="q-2"' in page

        await asyncio.to_thread(browser.get, f"{a}/overview")
        overview = browser.find_element(By.TAG_NAME, "main").text
        assert "Decisions per action" in overview and browser.find_element(By.ID, "depth").text == "3"
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 5
        if shots:
            browser.save_screenshot(str(Path(shots) / "console-overview.png"))
        status, metrics = await asyncio.to_thread(replicas[0].get, "/metrics")
        assert status == 200 and b'moderation_console_refused_total{reason="csrf"} 2.0' in metrics
    finally:
        for r in replicas:
            assert r.terminate() == 0, r.log_tail()
    for r in replicas:
        log = r.log_path.read_text()
        assert not [t for t in TEXTS.values() if t in log], "post text reached the log"
        assert "correct-horse" not in log
