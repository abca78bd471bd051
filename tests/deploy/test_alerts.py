"""deploy/prometheus/alerts.yml: valid, unit-tested, identical to the PrometheusRule, and about real series.

* ``promtool check rules`` and ``promtool test rules deploy/prometheus/alerts.test.yml`` pass, and that
  test file has, for every alert, a case where it fires and one where it stays silent;
* k8s/base/prometheusrule.yaml is exactly what deploy/tools/render-prometheusrule.py makes of the rules
  file (one source of truth);
* every alert has a severity, a summary and a runbook_url whose anchor is a heading of docs/runbook.md;
* every worker series a rule reads is one WorkerMetrics can expose (kube-state-metrics series and the
  file's own recording rules aside).

promtool comes from deploy/tools/install-prometheus.sh (`make test` runs it); when it is missing the
tests fail with that hint instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_dashboard import series  # noqa: F401  (fixture: series name -> label names)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMETHEUSRULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
INSTALL_HINT = "run `bash deploy/tools/install-prometheus.sh` (or `make prometheus-tools`) to install promtool"
REQUIRED = {
    "ModerationNoProgress",
    "ModerationLagBeyondAutoscaler",
    "ModerationDeadLetterRateHigh",
    "ModerationWorkerRestarting",
    "ModerationEscalationRateHigh",
    "ModerationScoreDrift",
    "ModerationGPUPodOnCPU",
    "ModerationPolicyRejected",
    "ModerationVersionSkew",
}


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool not found: {INSTALL_HINT}")
    return path


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERT_TESTS.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names >= REQUIRED
    assert names - fires == set(), f"no firing promtool case for {names - fires}"
    assert names - silent == set(), f"no silent promtool case for {names - silent}"


def test_prometheusrule_is_generated_from_the_rules_file() -> None:
    spec = importlib.util.spec_from_file_location("render", ROOT / "deploy" / "tools" / "render-prometheusrule.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    committed = PROMETHEUSRULE.read_text(encoding="utf-8")
    assert committed == render.render(), (
        "k8s/base/prometheusrule.yaml is stale: run `.venv/bin/python deploy/tools/render-prometheusrule.py`"
    )
    obj = yaml.safe_load(committed)
    assert obj["spec"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))


def runbook_anchors() -> set[str]:
    """GitHub/GitLab heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_says_what_is_wrong_and_links_its_runbook_entry() -> None:
    anchors = runbook_anchors()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert len(alert["annotations"]["summary"]) > 30, name
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("https://") and url.split("#")[0].endswith("/docs/runbook.md"), url
        assert url.split("#", 1)[1] == name.lower() and name.lower() in anchors, f"{name}: no runbook heading {url}"


def series_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords, label
    lists of by/on clauses, label values or durations."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return names - {"and", "or", "unless"}


def test_rules_read_series_the_worker_exports(series: dict[str, set[str]]) -> None:  # noqa: F811
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        names = series_in(rule["expr"])
        assert names, rule
        for name in names - recorded:
            if name.startswith("kube_"):  # kube-state-metrics, not the worker
                continue
            assert name in series, (
                f"{name} (in {rule.get('alert') or rule.get('record')}) is not exported by the worker"
            )
