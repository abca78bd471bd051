#!/usr/bin/env bash
# `make bench-gpu` on a GPU machine that may have no package registry and an unknown set of tools.
#
#   bash deploy/tools/gpu-bench.sh [--dry-run] [OUT_DIR]
#
# 1. probe: what is here (Python, torch/CUDA, nvidia-smi, onnxruntime providers, Java) — printed first;
# 2. bring what is missing: when this Python cannot import the project's dependencies, install the
#    wheelhouse carried as .gpu-carry/part-* (deploy/tools/gpu-carry.sh) into .gpu-site/ — no network;
# 3. run `moderation bench gpu --processes 1,2` (probe + fp16 engine + workers end to end through a local
#    broker) with the pip-installed NVIDIA libraries (those torch's wheels bring) on LD_LIBRARY_PATH, so
#    onnxruntime-gpu finds CUDA in this process and in every worker it starts — without importing torch;
#    JSON into OUT_DIR (default bench-results/). --dry-run does every step on the CPU.
# The end-to-end step needs Java 17+ and the Kafka jars (~/.cache/moderation/kafka, or Maven Central);
# without them it fails with a message saying so, after the engine numbers were written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DRY=""
if [[ "${1:-}" == "--dry-run" ]]; then DRY="--dry-run"; shift; fi
OUT_DIR="${1:-bench-results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"

say() { echo "gpu-bench: $*"; }
say "python: $("$PY" --version 2>&1); java: $(java -version 2>&1 | head -n 1 || echo none)"
say "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo none)"
say "torch: $("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || echo none)"

deps_ok() { "$PY" -c "import faust, aiokafka, onnxruntime, tokenizers, orjson, pydantic_settings, structlog" 2>/dev/null; }
if ! PYTHONPATH="$PWD/.gpu-site:$PWD" deps_ok; then
    if ls .gpu-carry/part-* >/dev/null 2>&1; then
        say "installing the carried wheelhouse into .gpu-site/"
        ( cd .gpu-carry && { [[ ! -f SHA256SUMS ]] || sha256sum -c --quiet SHA256SUMS; } )
        rm -rf .gpu-site .gpu-carry/wheels
        cat .gpu-carry/part-* | tar -C .gpu-carry -xf -
        "$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps --target .gpu-site .gpu-carry/wheels/*.whl
        rm -rf .gpu-carry/wheels
    else
        say "the project's dependencies are missing and no .gpu-carry/part-* was carried: run deploy/tools/gpu-carry.sh where PyPI is reachable and carry its parts"
        exit 2
    fi
fi
export PYTHONPATH="$PWD/.gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
say "onnxruntime providers: $("$PY" -c 'import onnxruntime as o; print(o.get_available_providers())')"

NVIDIA_LIBS="$("$PY" -c 'from moderation.devtools.bench.gpu import nvidia_library_dirs as d; print(":".join(d()))')"
if [[ -n "$NVIDIA_LIBS" ]]; then
    export LD_LIBRARY_PATH="$NVIDIA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "CUDA libraries from pip packages on LD_LIBRARY_PATH: $NVIDIA_LIBS"
fi
NAME="gpu"; [[ -n "$DRY" ]] && NAME="gpu-dry"
"$PY" -m moderation bench gpu $DRY --processes 1,2 --out "$OUT_DIR/$NAME.json"
