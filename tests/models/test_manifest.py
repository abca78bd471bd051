import json
import shutil
from pathlib import Path

import pytest

from moderation.core.errors import ModelError
from moderation.models.manifest import (
    has_file,
    load_manifest,
    sha256_file,
    verify_all,
    verify_file,
)


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy, so tests can damage it."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _edit_manifest(model_dir: Path, **changes: object) -> None:
    path = model_dir / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_loads_contract_manifest(model_dir):
    manifest = load_manifest(model_dir)
    assert manifest.name == "tiny-moderation"
    assert manifest.labels() == {
        "toxicity": ("toxic", "insult", "threat"),
        "spam": ("ham", "spam"),
        "category": ("news", "sports", "tech", "other"),
    }
    assert manifest.tasks["toxicity"].kind == "multilabel"
    assert manifest.files["fp16"].derived_from == "fp32"


def test_verify_all_checks_committed_files_and_skips_derived(model_dir):
    checked = verify_all(model_dir, load_manifest(model_dir))
    assert set(checked) == {"fp32", "int8", "tokenizer"}
    assert checked["int8"] == model_dir / "model.int8.onnx"


def test_sha256_matches_hashlib(model_dir):
    import hashlib

    path = model_dir / "tokenizer.json"
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_names_it_and_says_how_to_restore(model_dir):
    (model_dir / "model.int8.onnx").unlink()
    manifest = load_manifest(model_dir)
    assert not has_file(model_dir, manifest, "int8")
    with pytest.raises(ModelError) as err:
        verify_file(model_dir, manifest, "int8")
    message = str(err.value)
    assert "model.int8.onnx" in message and "missing" in message
    assert "git checkout --" in message and "moderation models build" in message


def test_corrupt_file_is_a_sha256_mismatch(model_dir):
    path = model_dir / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"model.fp32.onnx \(fp32\) is corrupt \(sha256 mismatch.*git checkout"):
        verify_all(model_dir, load_manifest(model_dir))


def test_git_lfs_pointer_is_recognised(model_dir):
    (model_dir / "model.int8.onnx").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ModelError, match=r"git lfs pull"):
        verify_file(model_dir, load_manifest(model_dir), "int8")


def test_missing_derived_fp16_says_how_to_create_it(model_dir):
    with pytest.raises(
        ModelError, match=r"model.fp16.onnx \(fp16\) is missing: derive it from the shipped int8 file with "
        r"`moderation models derive` \(no torch"
    ):
        verify_file(model_dir, load_manifest(model_dir), "fp16")


def test_unlisted_variant(model_dir):
    data = json.loads((model_dir / "manifest.json").read_text())
    del data["files"]["int8"]
    (model_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"has no 'int8' file .*lists: fp16, fp32, tokenizer"):
        verify_file(model_dir, load_manifest(model_dir), "int8")


def test_no_manifest(tmp_path):
    with pytest.raises(ModelError, match=r"no model manifest at .*MODERATION_MODEL_DIR"):
        load_manifest(tmp_path)


def test_manifest_not_json(model_dir):
    (model_dir / "manifest.json").write_text("{")
    with pytest.raises(ModelError, match=r"not valid JSON"):
        load_manifest(model_dir)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": None}, "name"),
        ({"tasks": {}}, "tasks"),
        (
            {"tasks": {"spam": {"kind": "multiclass", "output": "spam", "labels": ["spam"]}}},
            "at least two labels",
        ),
        (
            {"tasks": {"tox": {"kind": "multilabel", "output": "t", "labels": ["a", "b"], "temperature": [1.0]}}},
            "1 temperatures for 2 labels",
        ),
        (
            {"tasks": {"tox": {"kind": "regression", "output": "t", "labels": ["a"]}}},
            "tasks.tox.kind",
        ),
        ({"files": {"tokenizer": {"path": "tokenizer.json", "sha256": "00"}}}, "no model"),
        ({"files": {"int8": {"path": "m.onnx", "sha256": "00"}}}, "files.tokenizer is missing"),
        (
            {"files": {"int8": {"path": "m.onnx"}, "tokenizer": {"path": "t.json", "sha256": "0"}}},
            "files.int8 has no sha256",
        ),
    ],
)
def test_schema_violations_are_reported(model_dir, changes, problem):
    _edit_manifest(model_dir, **changes)
    with pytest.raises(ModelError, match=r"is invalid") as err:
        load_manifest(model_dir)
    assert problem in str(err.value)
