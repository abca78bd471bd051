"""The alert rules in a real Prometheus server, scraping a real worker on the real broker.

promtool's unit tests (test_alerts.py) prove the rules' logic on made-up series; this proves the chain
end to end: the worker's /metrics as Prometheus scrapes it, the rules file as Prometheus loads it, and an
alert reaching the API. A stream of malformed posts must fire ModerationDeadLetterRateHigh.

The rules are a test copy of deploy/prometheus/alerts.yml with every ``for:`` set to 0s (nothing else
changed), scraped and evaluated every second. Prometheus is the Debian package's server
(deploy/tools/install-prometheus.sh); it runs on a free 127.0.0.1 port with its own data dir and is
always stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from moderation.devtools.launch import free_port
from tests.worker.harness import Setup, WorkerProcess, produce

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
INSTALL_HINT = "run `bash deploy/tools/install-prometheus.sh` (or `make prometheus-tools`)"
ALERT = "ModerationDeadLetterRateHigh"


def prometheus_bin() -> str:
    path = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    if path is None:
        pytest.fail(f"prometheus not found: {INSTALL_HINT}")
    return path


def write_config(workdir: Path, worker_port: int) -> Path:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    (workdir / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "moderation-worker-test", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())["data"]


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:  # not listening yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout_s:g} s (last: {last})")


async def test_malformed_stream_fires_the_dlq_alert_in_prometheus(deployment: Setup) -> None:
    prom_dir = deployment.workdir / "prometheus"
    prom_dir.mkdir()
    worker = WorkerProcess(deployment, "w-prometheus")
    port = free_port()
    prometheus: subprocess.Popen[bytes] | None = None
    log = (prom_dir / "prometheus.log").open("wb")
    try:
        await asyncio.to_thread(worker.wait_ready)
        config = write_config(prom_dir, worker.http_port)
        prometheus = subprocess.Popen(
            [
                prometheus_bin(),
                f"--config.file={config}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def scraping() -> bool:
            assert prometheus is not None and prometheus.poll() is None, (prom_dir / "prometheus.log").read_text()
            targets = api(port, "/api/v1/targets")["activeTargets"]
            return any(t["health"] == "up" for t in targets)

        await asyncio.to_thread(wait_for, scraping, 60, "Prometheus scraping the worker")
        rules = await asyncio.to_thread(api, port, "/api/v1/rules")
        loaded = {r["name"] for g in rules["groups"] for r in g["rules"]}
        assert ALERT in loaded and "ModerationNoProgress" in loaded

        before = (await asyncio.to_thread(api, port, "/api/v1/alerts"))["alerts"]
        assert not [a for a in before if a["labels"]["alertname"] == ALERT]  # silent before the bad stream
        bad = [(None, b"{not json %d" % i) for i in range(300)]  # 30 s of a producer gone wrong
        await produce(deployment.bootstrap, deployment.input_topic, bad, rate=20)

        def firing() -> list[dict[str, Any]]:
            alerts = api(port, "/api/v1/alerts")["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

        (alert, *_) = await asyncio.to_thread(wait_for, firing, 60, f"{ALERT} firing")
        assert alert["labels"]["job"] == "moderation-worker-test" and alert["labels"]["severity"] == "warning"
        assert "of the input of moderation-worker-test goes to the dead-letter topic" in alert["annotations"]["summary"]
        assert alert["annotations"]["runbook_url"].endswith("#moderationdeadletterratehigh")
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(timeout=10)
        log.close()
        assert await asyncio.to_thread(worker.terminate) == 0
