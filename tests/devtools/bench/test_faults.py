"""``moderation bench faults --quick``: the fault suite on its own broker with real workers and the tiny model.

The quick run is what ``make test`` runs of the suite (``make faults`` is the full one): 3,000 posts with
2 SIGKILLs and a broker restart, the whole poison corpus, and the four codecs from two client libraries.
It asserts the suite's verdict; a failure names the checks that failed and what the suite saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from moderation.devtools.bench import faults
from moderation.devtools.bench.cli import run as bench_run


def test_poison_corpus_covers_every_kind_from_the_issue_once() -> None:
    corpus = faults.poison_corpus(max_text_chars=20_000, max_message_bytes=1_000_000)
    kinds = [p.kind for p in corpus]
    assert len(kinds) == len(set(kinds)) >= 60
    by_kind = {p.kind: p for p in corpus}
    for kind in (
        "context_nested_300", "created_at_year_1", "created_at_year_9999", "raw_just_under_limit",
        "raw_just_over_limit", "context_980kb", "tombstone", "bad_utf8", "utf8_bom", "lone_surrogate_escape",
        "created_at_nan", "duplicate_keys", "array_10k", "arrays_nested_5000", "text_empty", "text_over_limit",
        "id_10k_chars", "null_byte_raw", "control_chars_raw",
    ):  # fmt: skip
        assert kind in by_kind, kind
    assert by_kind["tombstone"].value is None
    under, over = by_kind["raw_just_under_limit"].value, by_kind["raw_just_over_limit"].value
    assert under is not None and over is not None
    assert 990_000 < len(under) < 1_000_000 < len(over) < faults.INPUT_MAX_MESSAGE_BYTES
    assert (by_kind["context_nested_300"].value or b"").count(b'{"a":') == 300
    assert b"\\ud800" in (by_kind["lone_surrogate_escape"].value or b"")
    assert all(p.expect in ("dlq", "decision", "either") for p in corpus)


def test_reliability_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "RELIABILITY.md"
    faults.write_section(path, "full", "first\n")
    faults.write_section(path, "quick", "quick one\n")
    text = path.read_text()
    assert text.startswith("# Reliability") and "first\n" in text and "quick one\n" in text
    path.write_text(text + "\nA note someone added.\n")
    faults.write_section(path, "full", "second\n")
    text = path.read_text()
    assert "first" not in text and "second\n" in text and "quick one\n" in text and "A note someone added." in text
    assert text.count("faults:full:begin") == 1


def test_readme_figures_are_copied_from_the_run(tmp_path: Path) -> None:
    kills = [
        {"kind": "kill", "duplicates": d, "uncommitted_decided": d, "restart_to_first_decision_s": r}
        for d, r in ((61, 2.17), (12, 2.75))
    ]
    result = {
        "verdict": "pass",
        "machine": {"git_commit": "abc1234", "model": "moderation-minilm 2.0.0"},
        "scenarios": {
            "kill": {"kills": 2, "broker_restarts": 1, "sent": 30_000, "missing": 0, "events": [
                kills[0], {"kind": "broker restart", "duplicates": 0, "uncommitted_decided": None,
                           "restart_to_first_decision_s": 0.2}, kills[1]]},
            "poison": {"ok": 84, "kinds": 84, "unexpected_exits": []},
            "codecs": {"rows": [{"ok": True}] * 8},
        },
    }  # fmt: skip
    text = faults.readme_figures(result)
    assert text.startswith("**PASS** at commit `abc1234` with moderation-minilm 2.0.0; 2 SIGKILLs and 1 broker")
    assert "30,000-post stream: 0 posts lost, 0–61 re-decided per fault (each time exactly" in text
    assert "restart to first decision 2.17–2.75 s" in text  # the kills' restarts, not the broker's
    assert "84/84 kinds handled with 0 worker exits" in text and "8/8 codec" in text
    readme = tmp_path / "README.md"
    begin, end = faults.README_BEGIN.format(mode="full"), faults.README_END.format(mode="full")
    readme.write_text(f"Measured by `make faults`: {begin}stale{end} — RELIABILITY.md\n")
    assert faults.write_inline(readme, begin, end, text)
    assert readme.read_text() == f"Measured by `make faults`: {begin}{text}{end} — RELIABILITY.md\n"
    other = faults.README_BEGIN.format(mode="quick")
    assert not faults.write_inline(readme, other, faults.README_END.format(mode="quick"), "x")  # no quick markers


@pytest.mark.kafka
@pytest.mark.timeout(900)
def test_quick_fault_suite_loses_nothing_and_never_crash_loops(
    tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODERATION_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("MODERATION_POLICY_FILE", str(tiny_policy_file))
    out, report = tmp_path / "faults.json", tmp_path / "RELIABILITY.md"
    args = argparse.Namespace(
        target="faults", out=str(out), report=str(report), quick=True, posts=None, kills=None, scenarios=None,
        seconds=None, batch_sizes=None, variants=None,
    )  # fmt: skip
    code = bench_run(args)
    result = json.loads(out.read_text())
    failed = [f"{c['name']}: {c['detail']}" for c in result["checks"] if not c["ok"]]
    assert code == (0 if not failed else 1)
    assert not failed, "fault suite failed (logs: " + result["logs"] + "):\n" + "\n".join(failed)

    kill = result["scenarios"]["kill"]
    assert kill["sent"] == kill["decided"] == faults.QUICK.posts and kill["missing"] == 0
    assert kill["kills"] == faults.QUICK.kills and kill["broker_restarts"] == 1
    assert all(e["restart_to_first_decision_s"] is not None for e in kill["events"])
    poison = result["scenarios"]["poison"]
    assert poison["ok"] == poison["kinds"] == len(faults.poison_corpus(20_000, 1_000_000))
    assert poison["worker_starts"] == 1 and poison["valid_missing"] == 0
    codecs = result["scenarios"]["codecs"]
    assert {(r["client"], r["codec"]) for r in codecs["rows"] if r["ok"]} == {
        (client, codec) for client in faults.CLIENTS for codec in faults.CODECS
    }
    md = report.read_text()
    assert "moderation bench faults --quick" in md and "**PASS**" in md and result["machine"]["git_commit"] in md
