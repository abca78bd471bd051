"""The package's shape is its architecture: what serves never imports what builds or measures."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moderation"
SERVING = ("core", "pipeline", "models", "worker", "review", "api")
BUILD_OR_TOOLING = ("moderation.training", "moderation.devtools")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def serving_files() -> list[Path]:
    files: list[Path] = []
    for entry in SERVING:
        path = PACKAGE / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_serving_code_never_imports_build_time_or_tooling_code() -> None:
    offenders = {}
    for path in serving_files():
        bad = sorted(m for m in imported_modules(path) if m.startswith(BUILD_OR_TOOLING))
        if bad:
            offenders[str(path.relative_to(PACKAGE.parent))] = bad
    assert not offenders


def test_serving_entry_points_load_nothing_from_the_other_side() -> None:
    """The same rule at run time: what the worker and `moderation score` actually load."""
    code = (
        "import sys, moderation.worker.cli, moderation.worker.app, moderation.worker.score, moderation.review,"
        " moderation.api.cli, moderation.api.server;"
        f"print(sorted(m for m in sys.modules if m.startswith({BUILD_OR_TOOLING!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_top_level_has_a_handful_of_layers() -> None:
    """Layers are the packages; beside them only the entry points and the typing marker."""
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info")}
    layers = {name for name in entries if (PACKAGE / name).is_dir()}
    assert entries - layers <= {"__init__.py", "__main__.py", "cli.py", "py.typed"}, sorted(entries - layers)
    assert len(layers) <= 8, sorted(layers)
    assert set(SERVING) | {m.rsplit(".", 1)[1] for m in BUILD_OR_TOOLING} == layers, "every layer is serving or tooling"


def test_tests_mirror_the_package() -> None:
    tests = Path(__file__).resolve().parent
    for layer in ("pipeline", "models", "worker", "review", "api", "training", "devtools"):
        assert (tests / layer).is_dir(), f"tests/{layer}/ missing"
