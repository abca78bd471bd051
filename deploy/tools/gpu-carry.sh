#!/usr/bin/env bash
# Build what a GPU machine without a package registry needs to run `make bench-gpu`: a wheelhouse for
# ITS Python (default 3.12, as found on the lent H200 machines) with the project, every runtime dependency
# and onnxruntime-gpu instead of onnxruntime, packed as parts small enough to travel one per call next to
# the working tree (the device tool carries at most 64 MiB a call; the tree is ~25 MB).
#
#   PYVER=3.12 PART_SIZE=30m bash deploy/tools/gpu-carry.sh     # -> .gpu-carry/part-aa, part-ab, … (git-ignored)
#
# On the GPU machine, deploy/tools/gpu-bench.sh joins the parts, installs them into .gpu-site/ and runs
# the benchmark. Needs network access to PyPI here, none there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYVER="${PYVER:-3.12}"
PART_SIZE="${PART_SIZE:-30m}"
PY="${PYTHON:-python3}"
OUT=.gpu-carry
rm -rf "$OUT"
mkdir -p "$OUT/wheels"

echo "gpu-carry: the project's own wheel"
"$PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$OUT/wheels" .

# The runtime dependencies as pyproject.toml declares them, with onnxruntime-gpu in place of onnxruntime
# (both provide the same module; only one may be installed).
mapfile -t DEPS < <("$PY" - <<'PYEOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name = dep.split(";")[0].split("#")[0].strip()
    if name.startswith("onnxruntime") and not name.startswith("onnxruntime-gpu"):
        name = "onnxruntime-gpu" + name[len("onnxruntime"):]
    print(name)
PYEOF
)
echo "gpu-carry: ${#DEPS[@]} dependencies and theirs, as wheels for CPython $PYVER on x86_64 Linux"
"$PY" -m pip download --disable-pip-version-check -q --only-binary=:all: --implementation cp \
    --python-version "$PYVER" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform linux_x86_64 -d "$OUT/wheels" "${DEPS[@]}"

tar -C "$OUT" -cf - wheels | split -b "$PART_SIZE" - "$OUT/part-"
rm -rf "$OUT/wheels"
( cd "$OUT" && sha256sum part-* > SHA256SUMS )
echo "gpu-carry: $(ls "$OUT"/part-* | wc -l) parts in $OUT ($(du -sh "$OUT" | cut -f1)); carry them (and SHA256SUMS) to the GPU machine"
