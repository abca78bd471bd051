#!/usr/bin/env bash
# Installs what the reviewer console's browser test drives: Debian's chromium and chromium-driver.
# Idempotent: instant when both are on PATH. Needs root (or sudo) and apt the first time; CI runs it
# through `make browser` before `make test`. Selenium itself comes with the dev extra.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "browser: $(chromium --version 2>/dev/null | head -n 1); driver: $(chromedriver --version | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no chromium/chromedriver and no apt-get; install Chromium and a matching" \
         "chromedriver with your package manager (the console's browser test needs both)" >&2
    exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "install-browser: need root (or sudo) to apt-get install chromium chromium-driver" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends chromium chromium-driver
echo "browser: $(chromium --version 2>/dev/null | head -n 1); driver: $(chromedriver --version | head -n 1)"
