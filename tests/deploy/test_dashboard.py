"""deploy/grafana/moderation-dashboard.json and deploy/prometheus/scrape.yml query what the worker exports.

Every metric name in a panel or variable query must be a series that WorkerMetrics' registry can
expose (counters as ``_total``, histograms as ``_bucket``/``_sum``/``_count``, info as ``_info``), every
label used in a matcher or a ``by (...)`` clause must be a label of a metric in that query (or a target
label Prometheus adds), and the dashboard must cover what issues 5 and 14 (drift, escalation) ask for.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from moderation.core.settings import Settings
from moderation.worker.cli import _load
from moderation.worker.http import Readiness, build_http_app
from moderation.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "moderation-dashboard.json"
SCRAPE = ROOT / "deploy" / "prometheus" / "scrape.yml"
TARGET_LABELS = {"job", "instance", "namespace", "pod", "node", "le"}
METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("_sum", "_count", "_created", ""),
}


@pytest.fixture(scope="module")
def series(tiny_model_dir: Path, tiny_policy_file: Path) -> dict[str, set[str]]:
    """Series name → label names, for everything a started worker's registry can expose.

    The worker's own start-up code (`_load`: engine, policy, model/policy info) runs against the tiny
    real model, so info metrics carry the labels the worker really sets; no broker is involved.
    """
    metrics = WorkerMetrics()
    settings = Settings(model_dir=tiny_model_dir, policy_file=tiny_policy_file, providers="CPUExecutionProvider")
    service, _ = asyncio.run(_load(settings, metrics, "dashboard-test", Readiness()))
    service.close()
    labelled = {
        m._name: set(m._labelnames)  # declared label names of each metric
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    labels: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names = set(labelled.get(family.name, set()))
            if suffix == "_bucket":
                names.add("le")
            labels[family.name + suffix] = names
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def queries(dashboard: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard["panels"])
    return found


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(query)
    return out


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def test_every_metric_in_the_dashboard_is_exported(series: dict[str, set[str]]) -> None:
    dashboard = load()
    assert "moderation_posts_consumed_total" in series and "moderation_model_info" in series
    exprs = queries(dashboard)
    assert len(exprs) >= 20
    for expr in exprs:
        names = METRIC.findall(expr)
        assert names, f"no metric selector in {expr!r}"
        for name in names:
            assert name in series, f"{name} (in {expr!r}) is not exported by WorkerMetrics"
        # every metric is written as name{...}, so the regex above saw all of them
        bare = re.findall(r"\b((?:moderation|process|python)_[a-z0-9_]+)\b(?!\s*\{)", expr)
        assert not bare, f"metric without a selector in {expr!r}: {bare}"
    for query in variable_queries(dashboard):
        match = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?,\s*(\w+)\)", query)
        assert match, query
        assert match[1] in series and match[3] in TARGET_LABELS | series[match[1]]


def test_labels_in_queries_belong_to_their_metrics(series: dict[str, set[str]]) -> None:
    for expr in queries(load()):
        names = METRIC.findall(expr)
        allowed = TARGET_LABELS.union(*(series[n] for n in names))
        for matchers in re.findall(r"\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in allowed, f"label {label!r} is not on {names} ({expr!r})"
        for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (x.strip() for x in clause.split(",")):
                assert label in allowed, f"by ({label}) is not a label of {names} ({expr!r})"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        for quantile in re.findall(r"histogram_quantile\(([^,]+),", expr):
            assert 0 < float(quantile) < 1
        if "histogram_quantile" in expr:
            assert "_bucket{" in expr and re.search(r"by \([^)]*\ble\b", expr), expr


def test_dashboard_covers_the_operating_questions() -> None:
    text = " ".join(queries(load()))
    required = {
        "throughput": "rate(moderation_posts_consumed_total{",
        "decisions by action": "by (action) (rate(moderation_decisions_total{",
        "end-to-end p50": "histogram_quantile(0.5, sum by (le) (rate(moderation_end_to_end_latency_seconds_bucket{",
        "end-to-end p99": "histogram_quantile(0.99, sum by (le) (rate(moderation_end_to_end_latency_seconds_bucket{",
        "stage p99": "histogram_quantile(0.99, sum by (le, stage) (rate(moderation_stage_duration_seconds_bucket{",
        "consumer lag": "moderation_consumer_lag{",
        "DLQ by error class": "by (error_class) (rate(moderation_dlq_records_total{",
        "escalations": "by (trigger) (rate(moderation_escalations_total{",
        "provider": "provider) (moderation_model_info{",
        "drift per task": "by (task) (moderation_score_drift_psi{",
        "escalation rate": "sum(rate(moderation_escalated_posts_total{",
        "escalation reference": "moderation_reference_escalation_ratio{",
        "category mix": "by (category) (rate(moderation_category_total{",
        "score distribution": "sum by (le, task, label) (rate(moderation_score_bucket{",
        "posts by language": "by (language) (rate(moderation_posts_by_language_total{",
        "unsupported languages": 'instance=~"$instance", trigger="unsupported_language"}',
    }
    missing = [what for what, fragment in required.items() if fragment not in text]
    assert not missing, f"dashboard lacks: {missing}"
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_scrape_config_targets_the_metrics_endpoint() -> None:
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    port = Settings.model_fields["http_port"].default
    paths = {r.canonical for r in build_http_app(WorkerMetrics(), Readiness().check).router.resources()}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"])
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") in paths
    local = jobs["moderation-worker-local"]
    assert local["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]
    k8s = jobs["moderation-worker"]
    keep = {tuple(r["source_labels"]): r["regex"] for r in k8s["relabel_configs"] if r.get("action") == "keep"}
    deployment = ROOT / "k8s" / "base" / "deployment.yaml"
    pod = yaml.safe_load(deployment.read_text(encoding="utf-8"))["spec"]["template"]
    assert (
        keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
        == pod["metadata"]["labels"]["app.kubernetes.io/name"]
    )
    port_names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert keep[("__meta_kubernetes_pod_container_port_name",)] in port_names
