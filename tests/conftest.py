"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


# --- Engine: a tiny real model artifact directory (owned by the engine engineer) ------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest + tokenizer + fp32/int8 ONNX following the model contract (tests/model_factory.py)."""
    try:
        from tests.model_factory import build_tiny_model
    except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
        from model_factory import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
