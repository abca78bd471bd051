#!/usr/bin/env bash
# Installs the pinned tools that render and validate k8s/ (`make k8s`, tests/deploy/test_k8s.py):
#   kustomize  — sigs.k8s.io/kustomize/kustomize/v5, built from the Go module proxy (`go install`)
#   strimzi    — @kubernetes-models/strimzi-kafka-operator from npm: the KafkaTopic validators generated
#                from Strimzi's own CRD schemas (run by deploy/tools/validate-strimzi.mjs under node)
# into $MODERATION_TOOLS_DIR (default ~/.cache/moderation/tools). Idempotent: a second run with the
# tools in place returns at once. Needs go (>= 1.22) and node + npm.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
STRIMZI_MODELS_VERSION=1.0.1
TOOLS_DIR="${MODERATION_TOOLS_DIR:-${HOME}/.cache/moderation/tools}"
mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/npm"

kustomize="$TOOLS_DIR/bin/kustomize"
if [[ -x "$kustomize" ]] && [[ "$("$kustomize" version 2>/dev/null)" == "$KUSTOMIZE_VERSION" ]]; then
    echo "kustomize $KUSTOMIZE_VERSION: $kustomize"
else
    command -v go >/dev/null || { echo "install-k8s-tools: go is not on PATH (needed to build kustomize)" >&2; exit 1; }
    echo "building kustomize $KUSTOMIZE_VERSION with $(go version) (about a minute) ..."
    GOTOOLCHAIN=local GOBIN="$TOOLS_DIR/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
    echo "kustomize $("$kustomize" version): $kustomize"
fi

pkg="$TOOLS_DIR/npm/node_modules/@kubernetes-models/strimzi-kafka-operator/package.json"
if [[ -f "$pkg" ]] && grep -q "\"version\": \"${STRIMZI_MODELS_VERSION}\"" "$pkg"; then
    echo "strimzi models $STRIMZI_MODELS_VERSION: $TOOLS_DIR/npm"
else
    command -v npm >/dev/null || { echo "install-k8s-tools: npm is not on PATH (needed for the Strimzi schemas)" >&2; exit 1; }
    npm install --prefix "$TOOLS_DIR/npm" --no-audit --no-fund --no-save --loglevel=error \
        "@kubernetes-models/strimzi-kafka-operator@${STRIMZI_MODELS_VERSION}"
    echo "strimzi models $STRIMZI_MODELS_VERSION: $TOOLS_DIR/npm"
fi
