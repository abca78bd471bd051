"""Re-extract the CRD schemas that tests/deploy vendors (tests/deploy/schemas/, see its README).

    python deploy/tools/vendor-crd-schemas.py

Downloads the pinned Go modules of KEDA and prometheus-operator through the Go module proxy
(`go mod download`, into a throw-away module cache) and writes the openAPIV3Schema of each served
version of ScaledObject, TriggerAuthentication, ServiceMonitor and PrometheusRule as JSON. Run it only to move to a
new release; the tests never touch the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "tests" / "deploy" / "schemas"
SOURCES = [
    # (module@version, CRD file inside the module zip)
    ("github.com/kedacore/keda/v2@v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml"),
    ("github.com/kedacore/keda/v2@v2.21.0", "config/crd/bases/keda.sh_triggerauthentications.yaml"),
    (
        "github.com/prometheus-operator/prometheus-operator@v0.85.0",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    ),
    (
        "github.com/prometheus-operator/prometheus-operator@v0.85.0",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
]


def main() -> int:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GOMODCACHE": cache, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        for module, crd_file in SOURCES:
            info = json.loads(
                subprocess.run(
                    ["go", "mod", "download", "-json", module], env=env, check=True, capture_output=True, text=True
                ).stdout
            )
            crd = yaml.safe_load((Path(info["Dir"]) / crd_file).read_text(encoding="utf-8"))
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                name = f"{crd['spec']['group']}_{kind.lower()}_{version['name']}.json"
                (OUT / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
                print(f"{module} {crd_file} [{version['name']}] -> {OUT / name}")
            subprocess.run(["chmod", "-R", "u+w", cache], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
