"""What a person sees when a command starts with a bad environment: one clear line, never a traceback.

- an invalid ``MODERATION_*`` value: ``error: invalid settings: MODERATION_X: …`` and exit 2 from every
  command (the long-running ones say it as their one ``startup_failed`` JSON line);
- a ``MODERATION_*`` variable nothing reads (a misspelling): one warning naming the nearest valid
  variable, and the command goes on;
- every ``MODERATION_*`` name the repository reads is a known one, so none of them is warned about;
- ``produce`` / ``tail`` with no broker at the address: where it tried, then one error line, exit 2 (no
  aiokafka traceback, no "Unclosed producer" warning).

Real processes (``python -m moderation``); none of these needs a broker.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from moderation.core.settings import TOOLING_ENV, known_env_names, unknown_env_warnings

REPO = Path(__file__).resolve().parents[2]
POST = b'{"id": "p1", "text": "the match was great"}\n'

# (argv, starts through settings_for_process: says it as a JSON log line)
COMMANDS = [
    (["score", "-"], False),
    (["produce", "--file", "-"], False),
    (["tail", "posts"], False),
    (["replay", "--all"], False),
    (["demo"], False),
    (["kafka", "status"], False),
    (["bench", "engine"], False),
    (["worker"], True),
    (["console"], True),
    (["llm-review"], True),
    (["serve"], True),
]


def moderation(
    *argv: str, env: dict[str, str], stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MODERATION_")}
    clean.update(MODERATION_LOG_FORMAT="json", **env)
    proc = subprocess.run(
        [sys.executable, "-m", "moderation", *argv],
        input=stdin, capture_output=True, env=clean, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.mark.parametrize(("argv", "logs"), COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_an_invalid_setting_is_one_line_and_exit_2(argv: list[str], logs: bool) -> None:
    result = moderation(*argv, env={"MODERATION_MAX_BATCH": "abc"})
    said = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, said
    assert "Traceback" not in result.stderr and len(said) == 1, said
    if logs:
        record = orjson.loads(said[0])
        assert record["event"] == "startup_failed" and record["level"] == "critical", record
        message = record["error"]
    else:
        assert said[0].startswith("error: "), said
        message = said[0].removeprefix("error: ")
    assert message.startswith("invalid settings: MODERATION_MAX_BATCH: ") and "(got 'abc')" in message, message


def test_a_misspelt_variable_is_warned_about_with_the_nearest_name_and_the_command_goes_on() -> None:
    result = moderation("score", "-", env={"MODERATION_MAXBATCH": "8"}, stdin=POST)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["post_id"] == "p1"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: MODERATION_MAXBATCH is not a setting and is ignored; did you mean MODERATION_MAX_BATCH?"
    ], result.stderr


def test_a_long_running_process_logs_the_warning_as_json() -> None:
    # the console stops at once without a broker to join, after its start-up lines
    result = moderation(
        "console", env={"MODERATION_CONSOLE_USER": "demo:demo", "MODERATION_KAFKA_STATE_DIR": str(REPO / "no-such")}
    )
    records = [orjson.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    warned = [r for r in records if r["event"] == "unknown_setting"]
    assert len(warned) == 1 and warned[0]["level"] == "warning", records
    assert warned[0]["detail"] == (
        "MODERATION_CONSOLE_USER is not a setting and is ignored; did you mean MODERATION_CONSOLE_USERS?"
    )


def test_unknown_variables_unit() -> None:
    env = {
        "MODERATION_MAX_BATCH": "8",  # a setting
        "moderation_log_levl": "debug",  # settings are read case-insensitively: so is this check
        "MODERATION_TOOLS_DIR": "/opt/tools",  # read by make k8s-tools, not by Settings
        "MODERATION_NONSENSE_XYZ": "1",
        "PATH": "/usr/bin",
    }
    assert unknown_env_warnings(env) == [
        "MODERATION_NONSENSE_XYZ is not a setting and is ignored; see moderation/core/settings.py for the settings",
        "moderation_log_levl is not a setting and is ignored; did you mean MODERATION_LOG_LEVEL?",
    ]
    assert unknown_env_warnings({}) == []


# A MODERATION_* word in the repository that is not an environment variable.
NOT_ENV = {"MODERATION_ERROR_TYPE": "moderation/api/errors.py: a protobuf type URL constant"}


def test_every_moderation_variable_the_repository_reads_is_a_known_name() -> None:
    """Settings fields, plus TOOLING_ENV for what training, make and the tests read with os.environ or
    ${…}: an unknown one here would be warned about as a misspelling at every start."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.split()  # fmt: skip
    name = re.compile(r"MODERATION_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*[*{])")  # MODERATION_SSL_* is a family
    found: dict[str, set[str]] = {}
    for path in files:
        if path == "tests/core/test_cli_startup.py":
            continue  # its misspellings are on purpose
        try:
            text = (REPO / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for match in name.finditer(text):
            found.setdefault(match.group(0), set()).add(path)
    assert len(found) > 50, "the scan found too few names to be looking at the repository"
    unknown = {n: sorted(p) for n, p in found.items() if n not in known_env_names() and n not in NOT_ENV}
    assert not unknown, f"read but neither a setting nor in TOOLING_ENV: {unknown}"
    assert set(TOOLING_ENV) <= set(found), "TOOLING_ENV names a variable nothing reads any more"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


@pytest.mark.parametrize("argv", [["produce", "--file", "-"], ["tail", "posts", "--max", "1"]], ids=["produce", "tail"])
def test_no_broker_at_the_address_is_one_error_line(argv: list[str], tmp_path: Path) -> None:
    if argv[0] == "produce":
        posts = tmp_path / "posts.jsonl"
        posts.write_bytes(POST)
        argv = ["produce", "--file", str(posts)]
    where = f"127.0.0.1:{closed_port()}"
    result = moderation(*argv, env={"MODERATION_BOOTSTRAP_SERVERS": where})
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, lines
    assert lines == [f"kafka: bootstrap={where} source=env", lines[1]] and len(lines) == 2, lines
    assert lines[1].startswith(f"error: no Kafka broker answers at {where}: check MODERATION_BOOTSTRAP_SERVERS"), lines
