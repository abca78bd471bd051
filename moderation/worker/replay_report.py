"""``moderation replay``, the pure half: may a decision record be replayed here, does the replayed decision
reproduce it, and the report (JSON, or a table for people).

No Kafka and no model here (the I/O is :mod:`moderation.worker.replay`), so every rule is unit-tested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moderation.pipeline.records import Decision

ROUNDING = 5e-5  # decision records carry scores rounded to 4 decimals (moderation.pipeline.emit)
SCORE_TOLERANCE = 1e-4  # what the engine promises between two runs of one post (issue 19)
EXACT_FIELDS = ("action", "labels", "triggers")


# --- versions -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versions:
    """What made a decision: the model (name, version, variant, served file's sha256) and the policy."""

    model: str
    version: str
    variant: str
    policy: str
    sha256: str | None = None  # absent on records written before the worker recorded it

    @classmethod
    def of_record(cls, doc: Mapping[str, Any]) -> Versions:
        found = doc.get("model")
        model: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        sha = model.get("sha256")
        return cls(
            model=str(model.get("name", "?")),
            version=str(model.get("version", "?")),
            variant=str(model.get("variant", "?")),
            policy=str(doc.get("policy_version", "?")),
            sha256=str(sha) if sha else None,
        )

    @classmethod
    def loaded(cls, info: Mapping[str, Any], policy_version: str) -> Versions:
        """The engine's ``info()`` and the policy in force."""
        sha = info.get("sha256")
        return cls(str(info["name"]), str(info["version"]), str(info["variant"]), policy_version, sha or None)

    def model_text(self) -> str:
        sha = f" (sha256 {self.sha256[:12]})" if self.sha256 else ""
        return f"model {self.model} {self.version} {self.variant}{sha}"

    def text(self) -> str:
        return f"{self.model_text()} with policy {self.policy}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model, "version": self.version, "variant": self.variant, "sha256": self.sha256},
            "policy_version": self.policy,
        }


def mismatched(record: Versions, loaded: Versions) -> tuple[str, ...]:
    """The parts of ``record`` that are not what is loaded (the sha256 only when the record has one)."""
    pairs = (
        ("model.name", record.model, loaded.model),
        ("model.version", record.version, loaded.version),
        ("model.variant", record.variant, loaded.variant),
        ("model.sha256", record.sha256, record.sha256 and loaded.sha256),
        ("policy_version", record.policy, loaded.policy),
    )
    return tuple(name for name, a, b in pairs if a != b)


def _escalation_part(policy_version: str) -> tuple[str, str | None]:
    """``2026.12.04-1+escalation-0.05`` → (``2026.12.04-1``, ``0.05``) (moderation.pipeline.policy.with_band)."""
    base, sep, target = policy_version.partition("+escalation-")
    return base, target if sep else None


def mismatch_message(record: Versions, loaded: Versions, count: int) -> str:
    """One line: what the records name, what is loaded, and which settings load the right ones."""
    wrong = mismatched(record, loaded)
    fixes: list[str] = []
    if {"model.name", "model.version", "model.sha256"} & set(wrong):
        which = f" whose {record.variant} file has sha256 {record.sha256[:12]}" if record.sha256 else ""
        fixes.append(f"MODERATION_MODEL_DIR=<artifact directory of {record.model} {record.version}{which}>")
    if "model.variant" in wrong:
        fixes.append(f"MODERATION_MODEL_VARIANT={record.variant}")
    if "policy_version" in wrong:
        (base, target), (loaded_base, loaded_target) = _escalation_part(record.policy), _escalation_part(loaded.policy)
        if base != loaded_base:
            fixes.append(f"MODERATION_POLICY_FILE=<policy file of version {base}>")
        if target != loaded_target:
            fixes.append(f"MODERATION_ESCALATION_TARGET={target}" if target else "MODERATION_ESCALATION_TARGET unset")
    noun = "record was" if count == 1 else "records were"
    return (
        f"{count} decision {noun} made by {record.text()}, but {loaded.text()} is loaded; "
        f"to replay {'it' if count == 1 else 'them'} run with {' '.join(fixes)}"
    )


# --- comparison ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDiff:
    field: str  # action | labels | triggers | scores.<task>.<label>
    recorded: Any
    replayed: Any


def _scores_within(recorded: Any, replayed: Mapping[str, Mapping[str, float]], tolerance: float) -> list[FieldDiff]:
    recorded = recorded if isinstance(recorded, Mapping) else {}
    out: list[FieldDiff] = []
    for task in sorted(set(recorded) | set(replayed)):
        rec_labels = recorded.get(task) if isinstance(recorded.get(task), Mapping) else {}
        new_labels = replayed.get(task, {})
        for label in sorted(set(rec_labels) | set(new_labels)):
            a, b = rec_labels.get(label), new_labels.get(label)
            if isinstance(a, int | float) and b is not None and abs(float(a) - float(b)) <= tolerance:
                continue
            out.append(FieldDiff(f"scores.{task}.{label}", a, None if b is None else round(float(b), 6)))
    return out


def compare(recorded: Mapping[str, Any], replayed: Decision, tolerance: float = SCORE_TOLERANCE) -> list[FieldDiff]:
    """Where the replayed decision differs from the record: action, labels and triggers exactly (order
    too), every score within ``tolerance`` after the record's 4-decimal rounding."""
    new: dict[str, Any] = {
        "action": replayed.action,
        "labels": list(replayed.labels),
        "triggers": list(replayed.triggers),
    }
    diffs = [FieldDiff(name, recorded.get(name), new[name]) for name in EXACT_FIELDS if recorded.get(name) != new[name]]
    return diffs + _scores_within(recorded.get("scores"), replayed.scores, tolerance + ROUNDING)


def max_score_delta(recorded: Mapping[str, Any], replayed: Decision) -> float:
    """Largest |recorded − replayed| over the scores both have (0.0 when none)."""
    scores = recorded.get("scores")
    deltas = [
        abs(float(value) - float(replayed.scores[task][label]))
        for task, labels in (scores.items() if isinstance(scores, Mapping) else ())
        if isinstance(labels, Mapping)
        for label, value in labels.items()
        if isinstance(value, int | float) and label in replayed.scores.get(task, {})
    ]
    return max(deltas, default=0.0)


# --- the report ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Where:
    """A post's origin and the decision record that names it."""

    post_id: str
    topic: str
    partition: int
    offset: int
    decision_partition: int
    decision_offset: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "origin": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "decision": {"partition": self.decision_partition, "offset": self.decision_offset},
        }


@dataclass(frozen=True, slots=True)
class Differing:
    where: Where
    diffs: tuple[FieldDiff, ...]


@dataclass(frozen=True, slots=True)
class NotReplayed:
    where: Where
    reason: str  # why the post could not be re-scored


@dataclass
class Report:
    """Counts over every selected decision record; lists of what went wrong."""

    loaded: Versions
    selection: dict[str, Any] = field(default_factory=dict)
    total: int = 0
    reproduced: int = 0
    differing: list[Differing] = field(default_factory=list)
    missing: list[NotReplayed] = field(default_factory=list)
    undecodable: list[NotReplayed] = field(default_factory=list)
    skipped: Counter[Versions] = field(default_factory=Counter)
    unreadable: int = 0  # decision records that are not decision records (no JSON, no origin)
    max_delta: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.reproduced + len(self.differing)

    @property
    def skipped_version_mismatch(self) -> int:
        return sum(self.skipped.values())

    def add_compared(self, where: Where, recorded: Mapping[str, Any], replayed: Decision) -> None:
        diffs = compare(recorded, replayed)
        self.max_delta = max(self.max_delta, max_score_delta(recorded, replayed))
        if diffs:
            self.differing.append(Differing(where, tuple(diffs)))
        else:
            self.reproduced += 1

    def all_mismatched(self) -> bool:
        """Records were selected, and none of them was made by what is loaded."""
        readable = self.total - self.unreadable
        return readable > 0 and self.skipped_version_mismatch == readable

    def mismatch_lines(self) -> list[str]:
        return [mismatch_message(v, self.loaded, n) for v, n in self.skipped.most_common()]

    def exit_code(self, strict: bool = False) -> int:
        """0: all compared records reproduce; 1: some differ, or records were selected but none could be
        compared (every post gone or undecodable: an audit that checked nothing must not pass); 2: a version
        mismatch under ``--strict``, or every record was made by another model or policy."""
        if self.all_mismatched() or (strict and self.skipped):
            return 2
        if self.total and not self.compared:
            return 1
        return 1 if self.differing else 0

    def verdict(self, strict: bool = False) -> str:
        """The one-line summary."""
        if self.all_mismatched():
            return f"nothing replayed: {'; '.join(self.mismatch_lines())}"
        if self.total == 0:
            return "no decision records in the selection: nothing replayed"
        if self.compared:
            share = 100.0 * self.reproduced / self.compared
            line = f"{self.reproduced} of {self.compared} replayed decisions reproduce exactly ({share:.1f} %)"
        else:
            line = f"none of the {self.total} decision records could be replayed"
        if self.differing:
            line += f"; {len(self.differing)} differ"
        left = [
            f"{n} {what}"
            for n, what in (
                (len(self.missing), "missing"),
                (len(self.undecodable), "undecodable"),
                (self.skipped_version_mismatch, "skipped (version mismatch)"),
                (self.unreadable, "unreadable"),
            )
            if n
        ]
        if left:
            line += f"; not replayed: {', '.join(left)}"
        if strict and self.skipped:
            line += " (--strict: a version mismatch fails the run)"
        return line

    def to_json(self, show: int = 0, strict: bool = False) -> dict[str, Any]:
        """The machine-readable report; ``show`` caps each list (0: everything)."""

        def cap(items: Sequence[Any]) -> Sequence[Any]:
            return items[:show] if show else items

        return {
            "verdict": self.verdict(strict),
            "exit_code": self.exit_code(strict),
            "selection": self.selection,
            "loaded": self.loaded.as_dict(),
            "total": self.total,
            "compared": self.compared,
            "reproduced": self.reproduced,
            "differing": len(self.differing),
            "missing": len(self.missing),
            "undecodable": len(self.undecodable),
            "skipped_version_mismatch": self.skipped_version_mismatch,
            "unreadable": self.unreadable,
            "max_score_delta": round(self.max_delta, 6),
            "score_tolerance": SCORE_TOLERANCE,
            "differences": [
                {
                    **d.where.as_dict(),
                    "fields": [{"field": f.field, "recorded": f.recorded, "replayed": f.replayed} for f in d.diffs],
                }
                for d in cap(self.differing)
            ],
            "missing_posts": [{**m.where.as_dict(), "reason": m.reason} for m in cap(self.missing)],
            "undecodable_posts": [{**m.where.as_dict(), "reason": m.reason} for m in cap(self.undecodable)],
            "version_mismatches": [
                {**v.as_dict(), "records": n, "message": mismatch_message(v, self.loaded, n)}
                for v, n in self.skipped.most_common()
            ],
            "notes": self.notes,
        }


def _short(value: Any, width: int = 60) -> str:
    text = (
        value
        if isinstance(value, str)
        else repr(value)
        if not isinstance(value, list)
        else ", ".join(map(str, value)) or "—"
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def render(report: Report, console: Any, show: int = 20, strict: bool = False) -> None:
    """The report as tables on a rich ``Console``: counts, then up to ``show`` differing records and
    posts that could not be replayed."""
    from rich.table import Table

    console.print(f"replay of {report.selection.get('describe', 'decision records')}", highlight=False, markup=False)
    counts = Table(show_header=False)
    counts.add_column("what")
    counts.add_column("records", justify="right")
    for name, value in (
        ("total", report.total),
        ("reproduced exactly", report.reproduced),
        ("differing", len(report.differing)),
        ("missing post", len(report.missing)),
        ("undecodable post", len(report.undecodable)),
        ("skipped: version mismatch", report.skipped_version_mismatch),
        ("unreadable record", report.unreadable),
    ):
        counts.add_row(name, f"{value:,}")
    counts.add_row("largest score difference", f"{report.max_delta:.6f}")
    console.print(counts)
    console.print(f"loaded: {report.loaded.text()}", highlight=False, markup=False)

    if report.differing:
        table = Table(
            title=f"differing decisions ({min(show, len(report.differing)) if show else len(report.differing)} "
            f"of {len(report.differing)})"
        )
        for column in ("post_id", "origin", "field", "recorded", "replayed"):
            table.add_column(column)
        for d in report.differing[:show] if show else report.differing:
            origin = f"{d.where.topic}/{d.where.partition}@{d.where.offset}"
            for i, f in enumerate(d.diffs):
                table.add_row(
                    d.where.post_id if i == 0 else "",
                    origin if i == 0 else "",
                    f.field,
                    _short(f.recorded),
                    _short(f.replayed),
                )
        console.print(table)
    lost = report.missing + report.undecodable
    if lost:
        table = Table(title=f"not replayed ({min(show, len(lost)) if show else len(lost)} of {len(lost)})")
        for column in ("post_id", "origin", "why"):
            table.add_column(column)
        for m in lost[:show] if show else lost:
            table.add_row(m.where.post_id, f"{m.where.topic}/{m.where.partition}@{m.where.offset}", m.reason)
        console.print(table)
    for line in report.mismatch_lines() + report.notes:
        console.print(line, highlight=False, markup=False)
    console.print(report.verdict(strict), highlight=False, markup=False)
