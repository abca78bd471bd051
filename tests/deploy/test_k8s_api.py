"""The scoring API's manifests (k8s/api): rendered, validated like the other kustomizations, tied to the code.

Same validators as tests/deploy/test_k8s.py (Kubernetes OpenAPI strict, the CRDs' schemas), plus what matters
here: the Deployment runs `moderation serve` with settings that parse, its ports and probes are the ones
the server serves, the keys come from a Secret mounted where MODERATION_API_KEYS_FILE looks (as a directory,
so updates reach the pod), the policy is the worker overlay's ConfigMap, the grace periods are ordered, the
HPA scales this Deployment, and the NetworkPolicy opens only what the process uses.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import PurePosixPath
from typing import Any

import kubernetes_validate
import yaml

from moderation.cli import build_parser
from moderation.core.settings import Settings
from tests.deploy.test_k8s import (
    K8S,
    K8S_VERSION,
    crd_errors,
    is_custom,
    kustomize_bin,
    of_kind,
    port_number,
    selects,
    served_paths,
)
from tests.deploy.test_k8s import (
    render as render_overlay,
)

NAME = "moderation-api"


@cache
def render() -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([kustomize_bin(), "build", str(K8S / "api")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kustomize build k8s/api failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(render(), kind) if o["metadata"]["name"] == name]
    return found


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = named("Deployment", NAME)["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (c,) = pod()["containers"]
    return dict(c)


def pod_env() -> dict[str, str]:
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(render(), "ConfigMap")}
    env: dict[str, str] = {}
    for source in container().get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container().get("env", []):
        env[item["name"]] = "from-secret" if "secretKeyRef" in item.get("valueFrom", {}) else item.get("value", "")
    return env


def settings() -> Settings:
    values = {k.removeprefix("MODERATION_").lower(): v for k, v in pod_env().items() if k != "MODERATION_WORKER_ID"}
    return Settings(**values)  # type: ignore[arg-type]


def mount_of(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume mount holding ``path`` and its volume."""
    volumes = {v["name"]: v for v in pod()["volumes"]}
    for mount in container()["volumeMounts"]:
        if PurePosixPath(path).parent == PurePosixPath(mount["mountPath"]):
            return mount, volumes[mount["name"]]
    raise AssertionError(f"nothing is mounted at {PurePosixPath(path).parent}")


def test_every_object_validates() -> None:
    objs = render()
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ConfigMap",
    } <= kinds
    for obj in objs:
        if is_custom(obj):
            assert not crd_errors(obj), f"{obj['kind']}/{obj['metadata']['name']}: {crd_errors(obj)}"
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"].get("namespace") == "moderation", obj["metadata"]["name"]


def test_runs_moderation_serve_with_valid_settings_and_no_secret_in_a_configmap() -> None:
    c = container()
    assert c["command"] == ["moderation", "serve"]
    build_parser().parse_args(["serve"])
    fields = {f"MODERATION_{name.upper()}" for name in Settings.model_fields}
    assert not sorted(set(pod_env()) - fields)
    s = settings()
    assert s.api_require_key and s.api_keys_file is not None and not s.api_keys.get_secret_value()
    config = {k for o in of_kind(render(), "ConfigMap") for k in o.get("data", {})}
    assert "MODERATION_API_KEYS" not in config


def test_ports_probes_and_grace_periods_match_the_server() -> None:
    c, s = container(), settings()
    assert port_number(c, "http") == s.api_port and port_number(c, "metrics") == s.http_port
    for probe, path in {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}.items():
        assert c[probe]["httpGet"]["path"] == path and path in served_paths()
        assert port_number(c, c[probe]["httpGet"]["port"]) == s.http_port
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + s.shutdown_grace_s < pod()["terminationGracePeriodSeconds"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    writable = [m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in mount_of(m["mountPath"] + "/x")[1]]
    assert any(str(s.cache_dir).startswith(w) for w in writable)


def test_keys_from_a_secret_directory_and_the_workers_policy() -> None:
    s = settings()
    assert s.api_keys_file is not None
    mount, volume = mount_of(str(s.api_keys_file))
    assert "subPath" not in mount and mount["readOnly"], "a subPath mount never sees a Secret update"
    assert volume["secret"]["secretName"] == "moderation-api-keys"
    assert [i["path"] for i in volume["secret"]["items"]] == [s.api_keys_file.name]
    mount, volume = mount_of(str(s.policy_file))
    policy_map = volume["configMap"]["name"]
    worker_maps = {o["metadata"]["name"]: o for o in of_kind(render_overlay("cpu"), "ConfigMap")}
    assert policy_map in worker_maps, "the API must read the policy the workers read"
    assert s.policy_file.name in worker_maps[policy_map]["data"]


def test_service_hpa_pdb_and_monitor_reach_the_pods() -> None:
    labels = named("Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    api, metrics = named("Service", NAME), named("Service", "moderation-api-metrics")
    assert selects(api["spec"]["selector"], labels) and api["spec"]["ports"][0]["targetPort"] == "http"
    assert selects(metrics["spec"]["selector"], labels) and metrics["spec"]["clusterIP"] == "None"
    monitor = named("ServiceMonitor", NAME)
    assert selects(monitor["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"])
    assert selects(named("PodDisruptionBudget", NAME)["spec"]["selector"]["matchLabels"], labels)
    hpa = named("HorizontalPodAutoscaler", NAME)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in named("Deployment", NAME)["spec"], "the HPA owns the replica count"
    assert container()["resources"]["requests"]["cpu"], "a CPU utilization target needs a CPU request"


def test_network_policy_opens_only_what_the_api_uses() -> None:
    policy = named("NetworkPolicy", NAME)
    labels = named("Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {"http", "metrics"}
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress == ({53, 9092, 9093} if settings().api_audit else {53})
