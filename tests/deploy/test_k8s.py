"""Render every kustomize overlay under k8s/overlays and validate what a cluster would receive.

* built-in kinds against the Kubernetes OpenAPI schemas shipped by ``kubernetes-validate`` (strict:
  unknown fields fail, as ``kubectl apply`` does by default), at :data:`K8S_VERSION`;
* ScaledObject, ServiceMonitor and PrometheusRule against their CRDs' openAPIV3Schema (tests/deploy/schemas/),
  KafkaTopic with the validators generated from Strimzi's CRDs (deploy/tools/validate-strimzi.mjs);
* the invariants that tie the manifests to the code: probes on the port and paths the worker really
  serves, grace periods ordered, partitions ≥ the most replicas any autoscaler may ask for, every env
  name a real ``Settings`` field with a valid value, the policy ConfigMap accepted by the policy loader,
  the securityContext rules, the GPU overlay asking for a GPU and serving fp16.

kustomize and the Strimzi validators come from ``deploy/tools/install-k8s-tools.sh`` (CI runs it); when
they are missing the tests fail with that hint instead of skipping.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from moderation.core.settings import DEFAULT_POLICY_FILE, Settings
from moderation.pipeline.policy import parse_policy
from moderation.worker.http import Readiness, build_http_app
from moderation.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_VERSION = "1.33.0"
INSTALL_HINT = (
    "run `bash deploy/tools/install-k8s-tools.sh` (or `make k8s`) to install the pinned kustomize and Strimzi schemas"
)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
}
STRIMZI_GROUP = "kafka.strimzi.io"
TOPIC_FIELDS = (
    "input_topic",
    "decisions_topic",
    "allowed_topic",
    "blocked_topic",
    "review_topic",
    "llm_review_topic",
    "dlq_topic",
)


# ------------------------------------------------------------------------------------ tools + render


def tools_dir() -> Path:
    return Path(os.environ.get("MODERATION_TOOLS_DIR", Path.home() / ".cache" / "moderation" / "tools"))


def kustomize_bin() -> str:
    path = os.environ.get("KUSTOMIZE") or str(tools_dir() / "bin" / "kustomize")
    if not Path(path).is_file():
        pytest.fail(f"kustomize not found at {path}: {INSTALL_HINT}")
    return path


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [kustomize_bin(), "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kustomize build k8s/overlays/{overlay} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def strimzi_validate(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    npm_dir = tools_dir() / "npm"
    if node is None:
        pytest.fail("node is not on PATH: it runs the Strimzi KafkaTopic validators")
    if not (npm_dir / "node_modules" / "@kubernetes-models" / "strimzi-kafka-operator").is_dir():
        pytest.fail(f"Strimzi schemas not installed under {npm_dir}: {INSTALL_HINT}")
    proc = subprocess.run(
        [node, str(ROOT / "deploy" / "tools" / "validate-strimzi.mjs"), str(npm_dir)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(results) == len(objects)
    return results


# --------------------------------------------------------------------------------------- accessors


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def worker_container(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def settings_env(objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """Every MODERATION_* variable the worker container gets (envFrom ConfigMaps, then env)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objs, "ConfigMap")}
    container = worker_container(objs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom references ConfigMap {name!r}, which the overlay does not render"
        env.update(maps[name])
    for item in container.get("env", []):
        secret = item.get("valueFrom", {}).get("secretKeyRef")
        if secret is not None:
            env[item["name"]] = f"<from secret {secret['name']}/{secret['key']}>"
        else:
            env[item["name"]] = item.get("value", "<from fieldRef>")
    return env


SSL_FILE_SETTINGS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def effective_settings(objs: tuple[dict[str, Any], ...]) -> Settings:
    """The Settings a pod would build from its env (validated by pydantic, defaults for the rest).

    Values from a Secret count as set; TLS files (mounted in the pod, checked by
    test_kafka_credentials_come_from_a_secret) are stood in for by a file that exists here."""
    values = {k.removeprefix("MODERATION_").lower(): v for k, v in settings_env(objs).items() if v != "<from fieldRef>"}
    for name in SSL_FILE_SETTINGS:
        if values.get(name):
            values[name] = __file__
    return Settings(**values)  # type: ignore[arg-type]


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}"
    return int(named[port])


def served_paths() -> set[str]:
    app = build_http_app(WorkerMetrics(), Readiness().check)
    return {r.canonical for r in app.router.resources()}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def max_replicas(objs: tuple[dict[str, Any], ...]) -> list[int]:
    return [o["spec"]["maxReplicaCount"] for o in of_kind(objs, "ScaledObject")] + [
        o["spec"]["maxReplicas"] for o in of_kind(objs, "HorizontalPodAutoscaler")
    ]


# ---------------------------------------------------------------------------------- schema checks


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text(encoding="utf-8"))
    return strict(schema)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Close every object schema that lists its properties (kubectl's strict field validation)."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(obj["apiVersion"], obj["kind"]))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS or obj["apiVersion"].startswith(STRIMZI_GROUP + "/")


def test_overlays_exist() -> None:
    assert {"cpu", "gpu", "hpa"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_match_kubernetes_schemas(overlay: str) -> None:
    objs = render(overlay)
    builtin = [o for o in objs if not is_custom(o)]
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= {
        o["kind"] for o in builtin
    }
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} is invalid for k8s {K8S_VERSION}: {exc}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crds(overlay: str) -> None:
    objs = render(overlay)
    custom = [o for o in objs if is_custom(o)]
    kinds = {o["kind"] for o in custom}
    assert {"ServiceMonitor", "PrometheusRule", "KafkaTopic"} <= kinds
    for obj in custom:
        if obj["apiVersion"].startswith(STRIMZI_GROUP + "/"):
            continue
        errors = crd_errors(obj)
        assert not errors, f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {errors}"
    topics = of_kind(objs, "KafkaTopic")
    # Strimzi ≥ 0.49 serves v1; the comment in kafkatopics.yaml says v1beta2 works unchanged for older ones.
    as_v1beta2 = [{**t, "apiVersion": f"{STRIMZI_GROUP}/v1beta2"} for t in topics]
    for result in strimzi_validate([*topics, *as_v1beta2]):
        assert result["ok"], f"{overlay}: {result}"


def test_schema_checks_reject_broken_objects() -> None:
    """The validators used above do catch mistakes (so the passing tests mean something)."""
    scaled = copy.deepcopy(one(render("cpu"), "ScaledObject"))
    assert not crd_errors(scaled)
    typo = copy.deepcopy(scaled)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")  # the HPA spelling
    assert any("maxReplicas" in e for e in crd_errors(typo))
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500  # metadata values are strings
    assert crd_errors(wrong_type)
    monitor = copy.deepcopy(one(render("cpu"), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen seconds"
    assert crd_errors(monitor)

    topic = copy.deepcopy(of_kind(render("cpu"), "KafkaTopic")[0])
    topic["spec"]["partitions"] = 0
    bad_replicas = copy.deepcopy(topic)
    bad_replicas["spec"]["partitions"], bad_replicas["spec"]["replicas"] = 3, "three"
    assert [r["ok"] for r in strimzi_validate([topic, bad_replicas])] == [False, False]

    deployment = copy.deepcopy(one(render("cpu"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_port_and_paths_the_worker_serves(overlay: str) -> None:
    objs = render(overlay)
    container = worker_container(objs)
    settings = effective_settings(objs)
    paths = served_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    metrics_port = port_number(container, "metrics")
    assert metrics_port == settings.http_port, "container port differs from MODERATION_HTTP_PORT"
    expected = {"livenessProbe": "/healthz", "startupProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["path"] in paths, f"{probe} -> {get['path']}"
        assert port_number(container, get["port"]) == settings.http_port, f"{probe} port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_service_and_servicemonitor_reach_the_pods(overlay: str) -> None:
    objs = render(overlay)
    deployment, service, monitor = one(objs, "Deployment"), one(objs, "Service"), one(objs, "ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {p["name"]: p for p in service["spec"]["ports"]}
    container = worker_container(objs)
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") in served_paths()
        target = port_names[endpoint["port"]]["targetPort"]
        assert port_number(container, target) == effective_settings(objs).http_port
    pdb = one(objs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_worker_drain(overlay: str) -> None:
    objs = render(overlay)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    grace = effective_settings(objs).shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > grace, "Kubernetes would SIGKILL a worker still draining"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_security(overlay: str) -> None:
    objs = render(overlay)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(objs)
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True
    assert (sc.get("runAsUser") or pod_sc.get("runAsUser") or 0) > 0
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("privileged") in (None, False)
    assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}
    # read-only root: everything the worker writes must be on an emptyDir
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert "/tmp" in writable
    cache_dir = str(effective_settings(objs).cache_dir)
    assert any(cache_dir == w or cache_dir.startswith(w.rstrip("/") + "/") for w in writable), cache_dir
    namespace = one(objs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], obj["metadata"]["name"]
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    image = container["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_settings_fields(overlay: str) -> None:
    objs = render(overlay)
    env = settings_env(objs)
    fields = {f"MODERATION_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("MODERATION_") and k not in fields)
    assert not unknown, f"not Settings fields: {unknown}"
    assert all(k.startswith("MODERATION_") for k in env), sorted(env)
    effective_settings(objs)  # every value parses (ints are ints, ports in range, ...)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_configmap_is_a_valid_policy_mounted_for_hot_reload(overlay: str) -> None:
    objs = render(overlay)
    settings = effective_settings(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(objs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [
        m
        for m in container["volumeMounts"]
        if "configMap" in volumes[m["name"]] and str(settings.policy_file).startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(mounts) == 1, f"no ConfigMap volume holds MODERATION_POLICY_FILE={settings.policy_file}"
    mount = mounts[0]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates (no hot reload)"
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    configmap = next(o for o in of_kind(objs, "ConfigMap") if o["metadata"]["name"] == cm_name)
    key = str(settings.policy_file)[len(mount["mountPath"].rstrip("/")) + 1 :]
    text = configmap["data"][key]
    policy = parse_policy(text, source=f"ConfigMap {cm_name}/{key}")
    assert policy.labels
    assert text == DEFAULT_POLICY_FILE.read_text(encoding="utf-8"), (
        "k8s/base/policy.yaml drifted from moderation/pipeline/policies/default.yaml: copy it again"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_exist_with_enough_partitions(overlay: str) -> None:
    objs = render(overlay)
    settings = effective_settings(objs)
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(objs, "KafkaTopic")}
    wanted = {getattr(settings, f) for f in TOPIC_FIELDS}
    assert wanted <= set(topics), f"no KafkaTopic for {sorted(wanted - set(topics))}"
    ceilings = max_replicas(objs)
    assert ceilings, "no autoscaler in this overlay"
    for name in wanted:
        partitions = topics[name]["spec"]["partitions"]
        assert partitions >= max(ceilings), f"{name}: {partitions} partitions < max replicas {max(ceilings)}"
    assert settings.topic_partitions == topics[settings.input_topic]["spec"]["partitions"]
    # the Strimzi cluster the topics belong to is the one the workers bootstrap from
    host = settings.bootstrap_servers.split(",")[0].split(":")[0]
    for topic in topics.values():
        cluster = topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert host.startswith(f"{cluster}-kafka-bootstrap"), (cluster, host)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_exactly_one_autoscaler_owns_the_deployment(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    scalers = of_kind(objs, "ScaledObject") + of_kind(objs, "HorizontalPodAutoscaler")
    assert len(scalers) == 1
    ref = scalers[0]["spec"]["scaleTargetRef"]
    assert ref["name"] == deployment["metadata"]["name"] and ref.get("kind", "Deployment") == "Deployment"
    spec = scalers[0]["spec"]
    low = spec.get("minReplicaCount", spec.get("minReplicas"))
    high = spec.get("maxReplicaCount", spec.get("maxReplicas"))
    assert 1 <= low <= high


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_trigger_watches_the_workers_group(overlay: str) -> None:
    objs = render(overlay)
    scaled = of_kind(objs, "ScaledObject")
    if not scaled:
        assert of_kind(objs, "HorizontalPodAutoscaler"), f"{overlay}: neither KEDA nor HPA"
        return
    settings = effective_settings(objs)
    (trigger,) = scaled[0]["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == settings.bootstrap_servers
    assert meta["consumerGroup"] == settings.group_id
    assert meta["topic"] == settings.input_topic
    lag, activation = int(meta["lagThreshold"]), int(meta["activationLagThreshold"])
    assert lag > 0 and 0 < activation < lag
    # The derivation written next to it (lagThreshold = T_pod × B) must multiply out to the value used.
    source = (K8S / "overlays" / overlay / "scaledobject.yaml").read_text(encoding="utf-8")
    match = re.search(r"lagThreshold = ([\d.]+) posts/s × ([\d.]+) s = (\d+)", source)
    assert match, f"{overlay}/scaledobject.yaml lacks the 'lagThreshold = T posts/s × B s = N' derivation"
    per_pod, budget, result = float(match[1]), float(match[2]), int(match[3])
    assert round(per_pod * budget) == result == lag


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_kafka_dns_and_metrics(overlay: str) -> None:
    objs = render(overlay)
    policy = one(objs, "NetworkPolicy")
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    container = worker_container(objs)
    settings = effective_settings(objs)
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = [port_number(container, p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ingress_ports == [settings.http_port]
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {port for port, _ in egress_ports} <= {9092, 9093, 53}
    assert all(rule.get("to") for rule in policy["spec"]["egress"]), "egress rules must name a destination"
    for server in settings.bootstrap_servers.split(","):
        assert (int(server.rsplit(":", 1)[1]), "TCP") in egress_ports
    assert {(53, "UDP"), (53, "TCP")} <= egress_ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_only_where_asked(overlay: str) -> None:
    objs = render(overlay)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(objs)
    settings = effective_settings(objs)
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    if overlay != "gpu":
        assert gpus is None
        assert settings.model_variant == "int8" and settings.provider_list() == ["CPUExecutionProvider"]
        return
    assert int(gpus) >= 1
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    assert pod.get("nodeSelector"), "GPU pods need a node selector"
    assert "gpu" in container["image"].rsplit("/", 1)[-1]
    assert settings.model_variant == "fp16"
    assert settings.require_provider == "CUDAExecutionProvider"
    assert settings.provider_list()[0] == "CUDAExecutionProvider"


CREDENTIALS_SECRET = "moderation-kafka-credentials"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_credentials_come_from_a_secret(overlay: str) -> None:
    objs = render(overlay)
    env = settings_env(objs)
    settings = effective_settings(objs)
    assert settings.security_protocol == "SASL_SSL" and settings.sasl_mechanism.startswith("SCRAM-")
    # the password (and user) come from the Secret, never from a ConfigMap
    assert env["MODERATION_SASL_PASSWORD"] == f"<from secret {CREDENTIALS_SECRET}/password>"
    assert env["MODERATION_SASL_USERNAME"] == f"<from secret {CREDENTIALS_SECRET}/username>"
    for configmap in of_kind(objs, "ConfigMap"):
        assert not {"MODERATION_SASL_PASSWORD", "MODERATION_SASL_USERNAME"} & set(configmap.get("data", {}))
    # the CA file is the Secret's ca.crt, mounted read-only where MODERATION_SSL_CAFILE points
    cafile = Path(env["MODERATION_SSL_CAFILE"])
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in worker_container(objs)["volumeMounts"] if cafile.parent == Path(m["mountPath"])]
    assert mount.get("readOnly") is True and "subPath" not in mount
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == CREDENTIALS_SECRET
    assert {"key": "ca.crt", "path": cafile.name} in secret["items"]
    # KEDA reads the lag over the same kind of connection, with the same Secret
    for scaled in of_kind(objs, "ScaledObject"):
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["sasl"] == settings.sasl_mechanism.lower().replace("-", "_").replace("sha_", "sha")
        assert trigger["metadata"]["tls"] == "enable"
        auth_name = trigger["authenticationRef"]["name"]
        (auth,) = [a for a in of_kind(objs, "TriggerAuthentication") if a["metadata"]["name"] == auth_name]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs == {
            "username": (CREDENTIALS_SECRET, "username"),
            "password": (CREDENTIALS_SECRET, "password"),
            "ca": (CREDENTIALS_SECRET, "ca.crt"),
        }
