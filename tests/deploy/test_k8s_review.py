"""The review tier's manifests (k8s/review): rendered, validated like the worker overlays, and tied to the code.

Same validators as tests/deploy/test_k8s.py (Kubernetes OpenAPI strict, the CRDs' schemas, Strimzi's
KafkaTopic validators), plus the invariants that matter here: each Deployment runs a real subcommand,
probes and ports match the settings the pod builds from its env, secrets come from Secrets, the
autoscaler watches the LLM consumer's own group and topic, and the NetworkPolicies open nothing else.
"""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from moderation.cli import build_parser
from moderation.core.settings import Settings
from tests.deploy.test_k8s import (
    K8S,
    K8S_VERSION,
    SSL_FILE_SETTINGS,
    crd_errors,
    is_custom,
    kustomize_bin,
    of_kind,
    port_number,
    selects,
    served_paths,
    strimzi_validate,
)

DEPLOYMENTS = {"moderation-llm-review": "llm-review", "moderation-console": "console"}
SECRET_SETTINGS = {"MODERATION_SASL_PASSWORD", "MODERATION_LLM_API_KEY", "MODERATION_CONSOLE_USERS",
                   "MODERATION_CONSOLE_SECRET_KEY"}


@cache
def render() -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([kustomize_bin(), "build", str(K8S / "review")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kustomize build k8s/review failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(render(), kind) if o["metadata"]["name"] == name]
    return found


def container(deployment: str) -> dict[str, Any]:
    (c,) = named("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def pod_env(deployment: str) -> dict[str, str]:
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(render(), "ConfigMap")}
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container(deployment).get("env", []):
        env[item["name"]] = "from-secret" if "secretKeyRef" in item.get("valueFrom", {}) else item.get("value", "")
    return env


def settings_of(deployment: str) -> Settings:
    values = {k.removeprefix("MODERATION_").lower(): v for k, v in pod_env(deployment).items()
              if k != "MODERATION_WORKER_ID"}
    for name in SSL_FILE_SETTINGS:
        if values.get(name):
            values[name] = __file__
    if "console_users" in values:
        values["console_users"] = "alice:pw"
    return Settings(**values)  # type: ignore[arg-type]


def test_every_object_validates() -> None:
    objs = render()
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "NetworkPolicy", "ScaledObject", "ServiceMonitor", "KafkaTopic"} <= kinds
    for obj in objs:
        if obj["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        if is_custom(obj):
            assert not crd_errors(obj), f"{obj['kind']}/{obj['metadata']['name']}: {crd_errors(obj)}"
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "moderation", obj["metadata"]["name"]
    for result in strimzi_validate(of_kind(objs, "KafkaTopic")):
        assert result["ok"], result


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_runs_a_real_subcommand_with_valid_settings_and_secrets_from_secrets(deployment: str) -> None:
    c = container(deployment)
    assert c["command"] == ["moderation", DEPLOYMENTS[deployment]]
    build_parser().parse_args([DEPLOYMENTS[deployment]])  # the subcommand exists
    fields = {f"MODERATION_{name.upper()}" for name in Settings.model_fields}
    env = pod_env(deployment)
    assert not sorted(set(env) - fields)
    settings_of(deployment)  # every value parses
    from_secrets = {i["name"] for i in c["env"] if "secretKeyRef" in i.get("valueFrom", {})}
    maps = {k for o in of_kind(render(), "ConfigMap") for k in o.get("data", {})}
    assert not (SECRET_SETTINGS & maps), "a secret in a ConfigMap"
    expected = {"MODERATION_SASL_USERNAME", "MODERATION_SASL_PASSWORD"} | (
        {"MODERATION_LLM_API_KEY"} if deployment == "moderation-llm-review"
        else {"MODERATION_CONSOLE_USERS", "MODERATION_CONSOLE_SECRET_KEY"}
    )
    assert from_secrets == expected


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_probes_ports_and_pod_security(deployment: str) -> None:
    c, settings = container(deployment), settings_of(deployment)
    assert port_number(c, "metrics") == settings.http_port
    for probe, path in {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}.items():
        assert c[probe]["httpGet"]["path"] == path and path in served_paths()
        assert port_number(c, c[probe]["httpGet"]["port"]) == settings.http_port
    if deployment == "moderation-console":
        assert port_number(c, "http") == settings.console_port
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    pod = named("Deployment", deployment)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert any(str(settings.cache_dir).startswith(w) for w in writable)


def test_services_and_monitor_reach_the_pods() -> None:
    console_pod = named("Deployment", "moderation-console")["spec"]["template"]["metadata"]["labels"]
    llm_pod = named("Deployment", "moderation-llm-review")["spec"]["template"]["metadata"]["labels"]
    ui, metrics = named("Service", "moderation-console"), named("Service", "moderation-review-metrics")
    assert selects(ui["spec"]["selector"], console_pod) and not selects(ui["spec"]["selector"], llm_pod)
    assert ui["spec"]["ports"][0]["targetPort"] == "http"
    assert selects(metrics["spec"]["selector"], console_pod) and selects(metrics["spec"]["selector"], llm_pod)
    monitor = named("ServiceMonitor", "moderation-review")
    assert selects(monitor["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"])
    pdb = named("PodDisruptionBudget", "moderation-console")
    assert selects(pdb["spec"]["selector"]["matchLabels"], console_pod)


def test_llm_consumer_scales_on_its_own_lag() -> None:
    scaled = named("ScaledObject", "moderation-llm-review")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "moderation-llm-review"
    assert "replicas" not in named("Deployment", "moderation-llm-review")["spec"]
    (trigger,) = scaled["spec"]["triggers"]
    settings = settings_of("moderation-llm-review")
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.llm_group_id
    assert trigger["metadata"]["topic"] == settings.llm_review_topic
    assert trigger["metadata"]["bootstrapServers"] == settings.bootstrap_servers
    assert named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (topic,) = of_kind(render(), "KafkaTopic")
    assert topic["spec"]["topicName"] == settings.verdicts_topic
    assert scaled["spec"]["maxReplicaCount"] <= topic["spec"]["partitions"]


def test_network_policies_open_only_what_each_process_uses() -> None:
    for deployment in DEPLOYMENTS:
        policy = named("NetworkPolicy", deployment)
        pod = named("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
        assert selects(policy["spec"]["podSelector"]["matchLabels"], pod)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == ({"metrics", "http"} if deployment == "moderation-console" else {"metrics"})
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        allowed = {9092, 9093, 53} | ({8000, 443} if deployment == "moderation-llm-review" else set())
        assert egress_ports == allowed
    console_ui = [r for r in named("NetworkPolicy", "moderation-console")["spec"]["ingress"]
                  if any(p["port"] == "http" for p in r["ports"])]
    assert all(r.get("from") for r in console_ui), "the console UI must not be open to every pod"
