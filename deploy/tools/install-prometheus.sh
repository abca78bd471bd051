#!/usr/bin/env bash
# Installs Prometheus and promtool for the alert tests (tests/deploy/test_alerts.py: `promtool check
# rules`, `promtool test rules`, and one Prometheus server scraping a real worker). Debian's `prometheus`
# package ships both (/usr/bin/prometheus, /usr/bin/promtool). Idempotent: with both on PATH it returns
# at once. Needs apt-get and root (or sudo) the first time; elsewhere install them by hand, or point
# PROMTOOL / PROMETHEUS at the binaries.
set -euo pipefail

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
    exit 0
fi
if [[ -n "${PROMTOOL:-}" && -x "${PROMTOOL}" && -n "${PROMETHEUS:-}" && -x "${PROMETHEUS}" ]]; then
    echo "promtool: $PROMTOOL, prometheus: $PROMETHEUS (from the environment)"
    exit 0
fi
command -v apt-get >/dev/null || {
    echo "install-prometheus: no apt-get here; install prometheus + promtool (>= 2.40) and put them on PATH" >&2
    exit 1
}
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-prometheus: need root or sudo for apt-get" >&2; exit 1; }
    sudo=(sudo -n)
fi
echo "installing Debian's prometheus package (promtool + server) ..."
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
# The package enables a system-wide Prometheus on :9090; the tests start their own on a free port, so a
# service started by this install is stopped again rather than left running on the CI machine.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    "${sudo[@]}" systemctl disable --now prometheus || true
fi
echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
