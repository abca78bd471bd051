"""The Locust load test, driven like ``make loadtest``: real broker, real worker, tiny model, short run."""

from pathlib import Path

import pytest

from moderation.core.errors import ConfigError
from moderation.devtools import loadtest


def test_durations_use_locust_syntax():
    assert loadtest.parse_duration("60s") == 60
    assert loadtest.parse_duration("90") == 90
    assert loadtest.parse_duration("1h2m3s") == 3723
    for bad in ("10x", "5m3"):
        with pytest.raises(ConfigError):
            loadtest.parse_duration(bad)
    with pytest.raises(ConfigError):  # refused before any broker or worker is started
        loadtest.run(["--duration", "0s"])


def test_users_scale_with_the_rate():
    assert loadtest.users_for(0.5) == 1
    assert loadtest.users_for(14) == 14
    assert loadtest.users_for(5000) == 50


def test_short_headless_run_decides_every_post(tiny_worker_env: None, tmp_path: Path):
    report = tmp_path / "report"
    args = ["--rate", "8", "--duration", "12s", "--decision-timeout", "20", "--malformed-share", "0.05"]
    code = loadtest.run([*args, "--out", str(report)])
    assert code == 0

    summary = loadtest.read_stats(report / "loadtest_stats.csv")
    assert summary.failures == 0
    assert summary.decided >= 30  # ~96 posts produced; a loaded CI machine may start users late
    names = {row.name for row in summary.rows}
    assert names <= {"allow", "review", "block", "dlq", "Aggregated"}
    assert names & {"allow", "review", "block"}
    assert all(row.median_ms > 0 for row in summary.rows if row.requests)
    html = (report / "index.html").read_text()
    assert "Locust" in html and "allow" in html
    assert (report / "worker.log").stat().st_size > 0
