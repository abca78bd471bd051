"""``moderation demo``'s pieces that need no broker: what it counts, and what it does with the console at
the end with and without a terminal (issue 22, item 5).

- escalated = posts with at least one trigger (a post with two triggers is one post sent to LLM review
  once); the triggers are counted per post on their own line;
- with a terminal (a real pty) it keeps the console up until Enter; without one (stdin /dev/null) it says
  in one line that it stops the console now and how to start it yourself, and does not wait.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from moderation.devtools.demo import Tally, absorb, render, summary


def decision(post_id: str, action: str, triggers: list[str]) -> dict[str, Any]:
    return {
        "post_id": post_id,
        "action": action,
        "triggers": triggers,
        "reasons": ["a reason"],
        "scores": {"toxicity": {"toxic": 0.4}, "category": {"general": 0.9}},
    }


def plain(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue()


def test_escalated_counts_posts_not_triggers() -> None:
    docs = [
        decision("p1", "review", ["uncertain", "high_stakes"]),
        decision("p2", "allow", ["uncertain"]),
        decision("p3", "block", []),
        decision("p4", "allow", ["uncertain", "uncertain"]),  # a repeated name is still one post, one trigger
    ]
    tally = Tally(expected_valid=4, expected_bad=0)
    for doc in docs:
        absorb(tally, doc, {d["post_id"]: f"text of {d['post_id']}" for d in docs})
    assert tally.escalated == 3
    assert tally.triggers == {"uncertain": 3, "high_stakes": 1}
    assert "escalated 3" in plain(render(tally))
    out = io.StringIO()
    summary(Console(file=out, width=200, color_system=None), tally, elapsed=1.0)
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.getvalue().splitlines() if "│" in line
    }
    assert rows["posts escalated to LLM review"] == "3"
    assert rows["posts per trigger"] == "uncertain 3, high_stakes 1"


# offer_console in a process of its own, with the stdin the test gives it; a sleeping process stands in
# for the console (offer_console only asks whether it still runs).
OFFER = """
import subprocess, sys, types
from rich.console import Console
from moderation.devtools.demo import offer_console
stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
try:
    offer_console(Console(width=400, color_system=None), types.SimpleNamespace(proc=stand_in),
                  "http://127.0.0.1:18080/", 30, console_port=8080)
    print("returned", stand_in.poll() is None)
finally:
    stand_in.kill()
"""


def run_offer(stdin: Any, **kw: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MODERATION_CONSOLE_USERS"}
    return subprocess.Popen(
        [sys.executable, "-c", OFFER], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, **kw
    )


def test_without_a_terminal_it_says_it_stops_the_console_and_how_to_start_it() -> None:
    proc = run_offer(subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=60)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0, lines
    assert lines[0].startswith("Reviewer console: http://127.0.0.1:18080/ — log in as demo / demo; 30 post(s)"), lines
    assert lines[1] == (
        "No terminal to wait on (stdin is not a TTY): stopping the console now. The queue stays on the broker; to "
        "try it, run `moderation kafka up` then "
        "`MODERATION_CONSOLE_USERS=demo:demo MODERATION_HTTP_HOST=127.0.0.1 moderation console` "
        "(http://127.0.0.1:8080/)."
    ), lines
    assert lines[2:] == ["returned True"], lines  # it did not wait, and the caller stops the console
    command = lines[1].split("`")[3]
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    assert f"`{command}`" in readme, "the README's 'Reviewer console' section says how to start it the same way"


def test_in_a_terminal_it_keeps_the_console_up_until_enter() -> None:
    master, slave = pty.openpty()
    try:
        proc = run_offer(slave)
        os.close(slave)
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()  # printed just before it waits
        assert first.startswith("Reviewer console: http://127.0.0.1:18080/"), first
        time.sleep(1.5)
        assert proc.poll() is None, "offer_console returned without waiting for Enter"
        os.write(master, b"\n")
        proc.wait(timeout=60)
        rest = proc.stdout.read()  # not communicate(): it would skip what readline() buffered
    finally:
        os.close(master)
    text = rest.decode()
    assert proc.returncode == 0, text
    assert text.startswith("Press Enter to stop the console and the worker … "), text
    assert "No terminal to wait on" not in text
    assert text.strip().splitlines()[-1].endswith("returned True"), text
