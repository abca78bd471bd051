"""``moderation bench soak``: the pure parts — its texts, the slope, the log rate, the report and its checks.

The soak itself runs for tens of minutes against a private broker (``make soak``); what it measured is in
RELIABILITY.md, written by that run.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from moderation.devtools.bench import soak
from moderation.pipeline.dedupe import text_key

WORDS = [a + b for a in ("ka", "lo", "mi", "ne", "po", "ru", "sa", "te", "vu", "zo") for b in "bdgkmnprst"]
SAMPLE = ["what a great match tonight", "buy cheap followers now at example dot com", "you people are the worst"]


def test_texts_are_mostly_distinct_with_some_repeats_and_reproducible() -> None:
    texts = list(itertools.islice(soak.soak_texts(WORDS, SAMPLE, seed=3), 5_000))
    keys = [text_key(t) for t in texts]
    distinct = len(set(keys)) / len(keys)
    assert 0.85 <= distinct <= 0.95  # ~10 % repeats of recent texts: the dedupe cache gets hits too
    assert all(t.strip() for t in texts)
    assert sum(any(s in t for s in SAMPLE) for t in texts) > 1_500  # demo posts and synthetic ones
    assert texts[:50] == list(itertools.islice(soak.soak_texts(WORDS, SAMPLE, seed=3), 50))


def test_slope_is_least_squares_in_mib_per_hour() -> None:
    line = [(t, 200 + 10 * t / 3600) for t in range(0, 3600, 10)]  # +10 MiB/h
    assert soak.slope_mib_per_h(line) == pytest.approx(10)
    flat = [(t, 200.0 + (0.5 if t % 20 else -0.5)) for t in range(0, 3600, 10)]  # noise, no trend
    assert abs(soak.slope_mib_per_h(flat) or 0) < 0.1
    assert soak.slope_mib_per_h(line[:2]) is None


def test_log_rate_counts_the_window_only(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    docs = [{"event": "starting", "timestamp": "2027-01-15T08:00:00+00:00"}]
    docs += [{"event": "summary", "timestamp": f"2027-01-15T08:{m:02d}:30Z"} for m in range(10, 40)]
    docs += [{"event": "partitions_assigned", "timestamp": "2027-01-15T08:20:00Z"}]
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs) + b"\nnot json\n")
    t10 = datetime.fromisoformat("2027-01-15T08:10:00+00:00").timestamp()
    lines, per_hour, events, total = soak.log_rate(path, t10, t10 + 1800)
    assert (lines, events, total) == (31, {"summary": 30, "partitions_assigned": 1}, 33)
    assert per_hour == pytest.approx(62)


def result(slope: float | None, lines_per_hour: int, missing: int = 0) -> dict[str, Any]:
    samples = [{"t_s": t, "rss_mib": 180.0, "cache_entries": 50_000, "decided": t * 28} for t in range(0, 3600, 10)]
    worker = {
        "source": "this checkout", "sent": 100_800, "decided": 100_800 - missing, "missing": missing, "dlq": 0,
        "exited": None, "warmup_s": 2000.0, "rss_mib": {"first": 150.0, "at_warmup_end": 178.0, "last": 180.0,
        "max": 181.0}, "slope_mib_per_h": 0.4, "last_half_slope_mib_per_h": slope, "cache_entries_last": 50_000,
        "log_lines_after_warmup": 30, "log_lines_per_hour": lines_per_hour, "log_events_after_warmup": {"summary": 26},
        "log_lines_total": 40, "summary_e2e_p99_ms_max": 90.0, "samples": samples,
    }  # fmt: skip
    doc: dict[str, Any] = {
        "command": "moderation bench soak --seconds 3600 --rate 28",
        "machine": {"git_commit": "abc1234", "when": "2027-01-15T08:00:00+00:00", "model": "moderation-minilm 2.0.0",
                    "cpu_count": 2, "load_avg_before": 0.5, "kafka": "Apache Kafka 4.1.1, a private broker"},
        "seconds": 3600.0, "rate": 28.0, "warmup_s": 2000.0, "cache_full_at_s": 2000.0, "dedupe_cache_size": 50_000,
        "duration_s": 3700.0, "distinct_share": 0.9, "workers": {"worker": worker}, "json": "bench-results/soak.json",
    }  # fmt: skip
    doc["checks"] = soak.checks(doc)
    doc["verdict"] = "pass" if all(c["ok"] for c in doc["checks"]) else "fail"
    return doc


def test_checks_hold_the_bars() -> None:
    assert result(0.5, 65)["verdict"] == "pass"
    failed = {c["name"] for c in result(3.0, 65)["checks"] if not c["ok"]}
    assert failed == {f"RSS levels off: last-half slope ≤ {soak.MAX_SLOPE_MIB_H:g} MiB/h"}
    assert {c["name"] for c in result(0.5, 96_000)["checks"] if not c["ok"]} == {
        f"log lines per hour at info ≤ {soak.MAX_LINES_PER_HOUR:,}"
    }
    assert result(None, 65)["verdict"] == result(0.5, 65, missing=3)["verdict"] == "fail"


def test_report_states_the_command_model_and_figures(tmp_path: Path) -> None:
    text = soak.markdown(result(0.5, 65))
    assert "`moderation bench soak --seconds 3600 --rate 28`" in text and "moderation-minilm 2.0.0" in text
    assert "| +0.4 | +0.5 |" in text and "| 65 |" in text and "50,000 entries" in text
    path = tmp_path / "RELIABILITY.md"
    path.write_text("# Reliability\n\nhand-written\n")
    soak.write_section(path, text)
    soak.write_section(path, soak.markdown(result(0.7, 70)))
    written = path.read_text()
    assert written.count(soak.SECTION_BEGIN) == 1 and "hand-written" in written and "| +0.7 |" in written


def test_the_readme_figure_is_written_between_its_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"Logs ... Measured by `make soak`: {soak.README_BEGIN}old{soak.README_END}. More text.\n")
    doc = result(0.5, 65)
    doc["workers"]["baseline"] = {**doc["workers"]["worker"], "source": "commit fc8500e", "log_lines_per_hour": 96_000}
    assert soak.write_inline(readme, soak.README_BEGIN, soak.README_END, soak.readme_figures(doc))
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{soak.README_END}. More text.\n")
    assert "65 log lines/h at info" in text and "+0.5 MiB/h" in text and "commit fc8500e" in text
    assert "96,000 lines/h" in text
    assert not soak.write_inline(tmp_path / "missing.md", soak.README_BEGIN, soak.README_END, "x")


def test_the_samples_read_the_cache_fill_and_the_largest_batch_from_the_worker_metrics() -> None:
    from prometheus_client import generate_latest

    from moderation.worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    text = generate_latest(metrics.registry).decode()
    assert soak.largest_batch(text) is None  # no batch yet
    for size in (1, 1, 3, 1, 20):
        metrics.batch_size.observe(size)
    metrics.cache_entries.set(1234)
    text = generate_latest(metrics.registry).decode()
    assert soak.largest_batch(text) == 32 and soak.cache_entries(text) == 1234  # 20 falls in the le=32 bucket
    metrics.batch_size.observe(5000)  # beyond the last finite bucket
    assert soak.largest_batch(generate_latest(metrics.registry).decode()) is None
