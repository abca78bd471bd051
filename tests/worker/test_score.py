"""``moderation score`` end to end, as a user runs it: a real subprocess, a real (tiny) model."""

import os
import subprocess
import sys
from pathlib import Path

import orjson

TINY_POLICY = Path(__file__).parents[1] / "data" / "tiny_policy.yaml"


def run_score(tmp_path: Path, model_dir: Path, lines: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MODERATION_MODEL_DIR": str(model_dir), "MODERATION_POLICY_FILE": str(TINY_POLICY)}
    return subprocess.run(
        [sys.executable, "-m", "moderation.cli", "score", "-"], input=lines, capture_output=True, env=env, timeout=120
    )


def test_score_writes_decisions_and_reports_bad_lines(tmp_path: Path, tiny_model_dir: Path) -> None:
    lines = b"\n".join(
        [
            orjson.dumps({"id": "1", "text": "the game last night was great"}),
            b'{"id": "2", "text": 5}',
            b"",
            orjson.dumps({"id": "3", "text": "buy cheap stuff now"}),
            b'{"id": "4", "text": "\xff\xfe"}',
        ]
    )
    proc = run_score(tmp_path, tiny_model_dir, lines)
    assert proc.returncode == 1, proc.stderr
    decisions = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [d["post_id"] for d in decisions] == ["1", "3"]
    assert all(d["action"] in {"allow", "review", "block"} and d["policy_version"] == "tiny-test-1" for d in decisions)
    errors = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith(b"{")]
    assert [(e["error.class"], e["origin.offset"]) for e in errors] == [("invalid_schema", "2"), ("invalid_utf8", "5")]
    assert b"scored 2 posts, rejected 2 lines" in proc.stderr


def test_score_exit_zero_when_all_good(tmp_path: Path, tiny_model_dir: Path) -> None:
    proc = run_score(tmp_path, tiny_model_dir, orjson.dumps({"id": "1", "text": "hello"}) + b"\n")
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["post_id"] == "1"


def test_missing_model_fails_fast_with_a_fix(tmp_path: Path) -> None:
    proc = run_score(tmp_path, tmp_path / "nowhere", b'{"id": "1", "text": "x"}\n')
    assert proc.returncode == 2
    assert b"manifest" in proc.stderr.lower()
