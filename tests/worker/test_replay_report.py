"""``moderation replay``'s pure half: version checks, the comparison, the report and its exit codes; and the
selection flags (times, offsets) and offset runs of the Kafka half."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from rich.console import Console

from moderation.cli import build_parser
from moderation.core.errors import ConfigError
from moderation.pipeline.records import Decision
from moderation.worker.replay import Selection, parse_time, runs
from moderation.worker.replay_report import Report, Versions, Where, compare, mismatch_message, mismatched, render

LOADED = Versions("moderation-minilm", "2.1.0", "int8", "2026.12.04-1", "ab" * 32)


def record(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "post_id": "p1",
        "action": "review",
        "labels": ["toxicity.toxic"],
        "triggers": ["low_confidence"],
        "scores": {"toxicity": {"toxic": 0.7312, "hate": 0.0101}, "spam": {"spam": 0.0}},
        "policy_version": LOADED.policy,
        "model": {
            "name": LOADED.model,
            "version": LOADED.version,
            "variant": "int8",
            "provider": "CPU",
            "sha256": LOADED.sha256,
        },
        "origin": {"topic": "posts", "partition": 1, "offset": 42},
    }
    doc.update(changes)
    return doc


def decision(scores: dict[str, dict[str, float]] | None = None, **changes: Any) -> Decision:
    fields: dict[str, Any] = {
        "post_id": "p1",
        "action": "review",
        "scores": scores or {"toxicity": {"toxic": 0.73123456, "hate": 0.01012}, "spam": {"spam": 0.00003}},
        "labels": ("toxicity.toxic",),
        "reasons": ("toxicity.toxic=0.73 in review band [0.60, 0.98)",),
        "triggers": ("low_confidence",),
        "confidence": 0.7312,
        "policy_version": LOADED.policy,
    }
    fields.update(changes)
    return Decision(**fields)


WHERE = Where("p1", "posts", 1, 42, 3, 7)


# --- versions -------------------------------------------------------------------------------------------


def test_a_record_of_the_loaded_model_and_policy_matches() -> None:
    assert mismatched(Versions.of_record(record()), LOADED) == ()


def test_a_record_without_sha256_is_checked_on_name_version_variant_and_policy() -> None:
    old = record(model={"name": LOADED.model, "version": LOADED.version, "variant": "int8", "provider": "CPU"})
    assert mismatched(Versions.of_record(old), LOADED) == ()


def test_each_part_that_differs_is_named() -> None:
    other = record(
        policy_version="2026.11.01-1",
        model={"name": LOADED.model, "version": "2.0.0", "variant": "fp32", "sha256": "cd" * 32},
    )
    assert mismatched(Versions.of_record(other), LOADED) == (
        "model.version",
        "model.variant",
        "model.sha256",
        "policy_version",
    )


def test_a_broken_model_field_is_a_mismatch_not_a_crash() -> None:
    assert "model.name" in mismatched(Versions.of_record(record(model="moderation-minilm")), LOADED)


def test_the_mismatch_message_is_one_line_naming_both_sides_and_the_settings() -> None:
    rec = Versions("moderation-minilm", "2.0.0", "fp32", "2026.11.01-1", "cd" * 32)
    line = mismatch_message(rec, LOADED, 37)
    assert "\n" not in line
    assert line.startswith("37 decision records were made by model moderation-minilm 2.0.0 fp32")
    assert "2026.11.01-1" in line and "moderation-minilm 2.1.0 int8" in line and "2026.12.04-1 is loaded" in line
    assert "MODERATION_MODEL_DIR=" in line and "MODERATION_MODEL_VARIANT=fp32" in line
    assert "MODERATION_POLICY_FILE=<policy file of version 2026.11.01-1>" in line


def test_only_the_settings_that_fix_the_mismatch_are_suggested() -> None:
    line = mismatch_message(Versions(LOADED.model, LOADED.version, LOADED.variant, "other-1", LOADED.sha256), LOADED, 1)
    assert "MODERATION_POLICY_FILE" in line
    assert "MODERATION_MODEL_DIR" not in line and "MODERATION_MODEL_VARIANT" not in line


def test_an_escalation_target_in_the_policy_version_names_its_setting() -> None:
    rec = Versions(LOADED.model, LOADED.version, LOADED.variant, f"{LOADED.policy}+escalation-0.05", LOADED.sha256)
    line = mismatch_message(rec, LOADED, 2)
    assert "MODERATION_ESCALATION_TARGET=0.05" in line and "MODERATION_POLICY_FILE" not in line


# --- comparison -----------------------------------------------------------------------------------------


def test_the_same_decision_reproduces() -> None:
    assert compare(record(), decision()) == []


def test_scores_are_compared_within_1e4_after_the_records_rounding() -> None:
    # recorded 0.7312 (rounded to 4 decimals): replayed may be up to 5e-5 + 1e-4 away
    assert compare(record(), decision({"toxicity": {"toxic": 0.73134, "hate": 0.0101}, "spam": {"spam": 0.0}})) == []
    (diff,) = compare(record(), decision({"toxicity": {"toxic": 0.73136, "hate": 0.0101}, "spam": {"spam": 0.0}}))
    assert (diff.field, diff.recorded, diff.replayed) == ("scores.toxicity.toxic", 0.7312, 0.73136)


def test_action_labels_and_triggers_must_be_equal() -> None:
    diffs = compare(record(), decision(action="block", labels=("toxicity.toxic", "toxicity.hate"), triggers=()))
    assert [(d.field, d.recorded, d.replayed) for d in diffs] == [
        ("action", "review", "block"),
        ("labels", ["toxicity.toxic"], ["toxicity.toxic", "toxicity.hate"]),
        ("triggers", ["low_confidence"], []),
    ]


def test_a_score_only_one_side_has_is_a_difference() -> None:
    diffs = compare(
        record(),
        decision({"toxicity": {"toxic": 0.7312, "hate": 0.0101}, "spam": {"spam": 0.0}, "category": {"sports": 0.9}}),
    )
    assert [(d.field, d.recorded, d.replayed) for d in diffs] == [("scores.category.sports", None, 0.9)]


# --- report ---------------------------------------------------------------------------------------------


def filled(**counts: int) -> Report:
    report = Report(LOADED)
    for _ in range(counts.get("same", 0)):
        report.total += 1
        report.add_compared(WHERE, record(), decision())
    for _ in range(counts.get("differ", 0)):
        report.total += 1
        report.add_compared(WHERE, record(), decision(action="block"))
    for _ in range(counts.get("skipped", 0)):
        report.total += 1
        report.skipped[Versions(LOADED.model, "1.0.0", "int8", LOADED.policy)] += 1
    return report


def test_all_reproduced_exits_0() -> None:
    report = filled(same=3)
    assert report.exit_code() == 0 and report.reproduced == 3 and report.compared == 3
    assert report.verdict() == "3 of 3 replayed decisions reproduce exactly (100.0 %)"
    assert report.max_delta == pytest.approx(3.456e-5)


def test_a_difference_exits_1_and_is_listed() -> None:
    report = filled(same=2, differ=1)
    assert report.exit_code() == 1
    out = report.to_json()
    assert (out["reproduced"], out["differing"], out["exit_code"]) == (2, 1, 1)
    (listed,) = out["differences"]
    assert listed["post_id"] == "p1" and listed["origin"] == {"topic": "posts", "partition": 1, "offset": 42}
    assert listed["decision"] == {"partition": 3, "offset": 7}
    assert listed["fields"] == [{"field": "action", "recorded": "review", "replayed": "block"}]


def test_some_records_of_another_model_are_skipped_unless_strict() -> None:
    report = filled(same=2, skipped=1)
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 2
    assert report.to_json()["skipped_version_mismatch"] == 1
    assert "1 skipped (version mismatch)" in report.verdict()
    (line,) = report.mismatch_lines()
    assert "moderation-minilm 1.0.0 int8" in line and "MODERATION_MODEL_DIR" in line


def test_every_record_of_another_model_exits_2_in_one_line() -> None:
    report = filled(skipped=4)
    assert report.all_mismatched() and report.exit_code() == 2
    verdict = report.verdict()
    assert "\n" not in verdict and verdict.startswith("nothing replayed: 4 decision records were made by")


def test_missing_and_undecodable_posts_are_counted_not_compared() -> None:
    from moderation.worker.replay_report import NotReplayed

    report = filled(same=1)
    report.total += 2
    report.missing.append(NotReplayed(WHERE, "deleted by retention"))
    report.undecodable.append(NotReplayed(WHERE, "invalid_json: ..."))
    assert report.exit_code() == 0 and report.compared == 1
    assert report.verdict().endswith("not replayed: 1 missing, 1 undecodable")
    assert report.to_json()["missing_posts"][0]["reason"] == "deleted by retention"


def test_show_caps_the_lists_not_the_counts() -> None:
    report = filled(differ=5)
    out = report.to_json(show=2)
    assert out["differing"] == 5 and len(out["differences"]) == 2
    assert len(report.to_json(show=0)["differences"]) == 5


def test_the_table_lists_counts_and_differences() -> None:
    report = filled(same=1, differ=1)
    console = Console(file=io.StringIO(), width=160)
    render(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "reproduced exactly" in text and "p1" in text and "posts/1@42" in text and "block" in text
    assert "1 of 2 replayed decisions reproduce exactly (50.0 %); 1 differ" in text


# --- selection ------------------------------------------------------------------------------------------

NOW = 1_800_000_000_000


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["replay", *argv])


def test_times_are_rfc3339_or_durations_back_from_now() -> None:
    assert parse_time("1h", NOW) == NOW - 3_600_000
    assert parse_time("90s", NOW) == NOW - 90_000
    assert parse_time("2d", NOW) == NOW - 2 * 86_400_000
    assert parse_time("2026-12-04T10:00:00Z", NOW) == parse_time("2026-12-04T11:00:00+01:00", NOW)
    assert parse_time("2026-12-04T10:00:00", NOW) == parse_time("2026-12-04T10:00:00Z", NOW)  # no zone: UTC
    with pytest.raises(ConfigError, match="RFC 3339"):
        parse_time("yesterday", NOW)


def test_the_selection_flags() -> None:
    assert Selection.from_args(args("--all"), NOW).everything
    sel = Selection.from_args(args("--since", "1h", "--until", "30m"), NOW)
    assert (sel.since_ms, sel.until_ms) == (NOW - 3_600_000, NOW - 1_800_000)
    assert sel.wants(NOW - 3_600_000) and not sel.wants(NOW - 1_800_000) and not sel.wants(NOW - 4_000_000)
    sel = Selection.from_args(args("--partition", "2", "--from-offset", "10", "--to-offset", "12"), NOW)
    assert (sel.partition, sel.from_offset, sel.to_offset) == (2, 10, 12)
    assert "partition 2 offsets 10..12" in sel.describe("moderation.decisions")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "say which decisions"),
        (("--all", "--since", "1h"), "--all replays the whole topic"),
        (("--from-offset", "3"), "add --partition"),
        (("--partition", "0", "--from-offset", "5", "--to-offset", "4"), "before --from-offset"),
        (("--since", "1h", "--until", "2h"), "is not after"),
        (("--partition", "-1"), "must be ≥ 0"),
    ],
)
def test_usage_errors_are_one_line(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Selection.from_args(args(*argv), NOW)


def test_wanted_offsets_are_read_in_runs_with_gaps_seeked_over() -> None:
    assert runs([5, 3, 4, 900, 3, 2_000, 2_400]) == [(3, 5), (900, 900), (2_000, 2_400)]
    assert runs([]) == []
