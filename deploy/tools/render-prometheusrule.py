"""Write k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yml (the one source of truth).

    .venv/bin/python deploy/tools/render-prometheusrule.py

prometheus-operator wants the rule groups wrapped in a PrometheusRule object; plain Prometheus reads
the rules file. Generating one from the other keeps the two from drifting apart; tests/deploy/test_alerts.py
fails when the committed PrometheusRule is not what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
OUT = ROOT / "k8s" / "base" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/tools/render-prometheusrule.py: edit that file,
# then re-run the script. prometheus-operator loads PrometheusRules whose labels match the Prometheus
# object's ruleSelector (kube-prometheus-stack: `release: <its release name>` unless ruleSelectorNilUsesHelmValues
# is false); add that label in an overlay if your Prometheus needs it.
"""


class _Literal(str):
    """Multi-line PromQL is written as a literal block, as in alerts.yml, so it stays readable."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def _blocks(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blocks(v) for v in node]
    if isinstance(node, str) and "\n" in node:
        return _Literal(node)
    return node


def render() -> str:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "moderation-worker", "labels": {"app.kubernetes.io/name": "moderation-worker"}},
        "spec": _blocks(rules),
    }
    dumper = yaml.SafeDumper
    dumper.add_representer(_Literal, _literal)
    return HEADER + yaml.dump(obj, Dumper=dumper, sort_keys=False, width=200, allow_unicode=True)


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
