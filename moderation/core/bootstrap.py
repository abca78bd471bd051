"""Which Kafka broker a process joins, and why — the same rule for every command.

1. ``MODERATION_BOOTSTRAP_SERVERS`` (or ``bootstrap_servers`` passed in code) is used as it is:
   deployments name their broker this way (the Kubernetes ConfigMap, docker-compose).
2. Else the local broker ``moderation kafka up`` runs, found through its state file
   (``<MODERATION_KAFKA_STATE_DIR>/broker.json``, default ``<cache_dir>/kafka/state``) when the process
   it names is alive and still that broker.
3. Else a :class:`BrokerError` that names both ways. There is no default address: a worker that
   joined whatever listened on 127.0.0.1:9092 decided another run's posts and committed its offsets.

The state file's format lives here because serving code reads it and must not import devtools;
:mod:`moderation.devtools.broker` writes it with :func:`write_state`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from moderation.core.errors import BrokerError
from moderation.core.settings import Settings

STATE_FILE_NAME = "broker.json"
ENV_NAME = "MODERATION_BOOTSTRAP_SERVERS"


@dataclass(frozen=True)
class BrokerState:
    """What a running local broker leaves behind so other processes can find and stop it."""

    pid: int
    port: int
    controller_port: int
    bootstrap: str
    cluster_id: str
    config: str
    log: str
    kafka_version: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerState:
        """Parse a state file; anything malformed is reported as a BrokerError, never a crash."""
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                port=int(data["port"]),
                controller_port=int(data["controller_port"]),
                bootstrap=str(data["bootstrap"]),
                cluster_id=str(data["cluster_id"]),
                config=str(data["config"]),
                log=str(data["log"]),
                kafka_version=str(data["kafka_version"]),
                started_at=float(data["started_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BrokerError(f"unreadable broker state file ({exc!r}); run `moderation kafka down`.") from exc


def read_state(path: Path) -> BrokerState | None:
    """The recorded broker, or None when there is no (valid) record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return BrokerState.from_json(text)
    except BrokerError:
        return None


def write_state(path: Path, state: BrokerState) -> None:
    """Atomic write, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(state.to_json(), encoding="utf-8")
    tmp.replace(path)


def state_dir(settings: Settings) -> Path:
    """The local broker's directory: MODERATION_KAFKA_STATE_DIR, else ``<cache_dir>/kafka/state``."""
    return (settings.kafka_state_dir or settings.cache_dir / "kafka" / "state").expanduser().absolute()


# --- is the recorded process still that broker? -------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True for a live process; reaps our own zombie children, treats others' zombies as dead."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> list[str]:
    if Path("/proc").is_dir():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return out.stdout.split()


def is_broker_process(pid: int, config: Path) -> bool:
    """The pid is a ``kafka.Kafka`` JVM started with this config (guards against pid reuse)."""
    args = _cmdline(pid)
    return "kafka.Kafka" in args and str(config) in args


def running_broker(settings: Settings) -> BrokerState | None:
    """The broker the state file records, if its process is alive and is that broker."""
    state = read_state(state_dir(settings) / STATE_FILE_NAME)
    if state is None or not pid_alive(state.pid) or not is_broker_process(state.pid, Path(state.config)):
        return None
    return state


# --- the rule ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """Where a process connects (``servers``) and why (``source``: ``env``, ``setting`` when passed in
    code, or ``state_file:<path>``)."""

    servers: str
    source: str

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with these servers, so every client of the process (and its checks) uses them."""
        if settings.bootstrap_servers == self.servers:
            return settings
        return settings.model_copy(update={"bootstrap_servers": self.servers})

    def describe(self) -> str:
        return f"bootstrap={self.servers} source={self.source}"


def resolve_bootstrap(settings: Settings) -> Bootstrap:
    """The broker this process joins (see the module docstring), or a one-line BrokerError naming both ways."""
    if settings.bootstrap_servers.strip():
        named_in_env = any(k.upper() == ENV_NAME and v.strip() for k, v in os.environ.items())
        return Bootstrap(settings.bootstrap_servers, "env" if named_in_env else "setting")
    path = state_dir(settings) / STATE_FILE_NAME
    state = running_broker(settings)
    if state is not None:
        return Bootstrap(state.bootstrap, f"state_file:{path}")
    recorded = read_state(path)
    if recorded is not None:
        why = f"its state file {path} is stale: broker pid {recorded.pid} is not running"
    elif path.exists():
        why = f"its state file {path} is unreadable"
    else:
        why = f"there is no state file {path}"
    raise BrokerError(
        f"no Kafka broker to connect to: set {ENV_NAME}=host:port, or start the local broker with "
        f"`moderation kafka up` (MODERATION_KAFKA_STATE_DIR picks which one; {why})"
    )


def resolved(settings: Settings) -> tuple[Settings, Bootstrap]:
    """``settings`` pointed at the broker :func:`resolve_bootstrap` finds, and where that is."""
    where = resolve_bootstrap(settings)
    return where.apply(settings), where
