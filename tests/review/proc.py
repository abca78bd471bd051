"""Review-tier processes (``moderation llm-review`` / ``moderation console``) as Kubernetes runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from moderation.devtools.launch import free_port, stop_process


class ReviewProcess:
    """``python -m moderation.cli <command>`` with its own HTTP (probe/metrics) port and log file."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.http_port = free_port()
        self.log_path = workdir / f"{name}.log"
        full_env = {
            **os.environ,
            "MODERATION_LOG_FORMAT": "json",
            "MODERATION_WORKER_ID": name,
            **env,
            "MODERATION_HTTP_PORT": str(self.http_port),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moderation.cli", *command], env=full_env, stdout=log, stderr=subprocess.STDOUT
            )

    def get(self, path: str, timeout_s: float = 3) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout_s) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    async def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited during start-up:\n{self.log_tail()}"
            try:
                if (await asyncio.to_thread(self.get, "/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.3)
        raise AssertionError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout_s: float = 30) -> int:
        return stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
