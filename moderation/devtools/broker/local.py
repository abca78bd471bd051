"""A real single-node Apache Kafka (KRaft) broker that the project starts by itself.

The jars come from Maven Central (resolved once into the cache dir), the broker runs as a detached
``java kafka.Kafka`` process, and a JSON state file in the state dir says where it listens and which
pid to stop. Every operation is idempotent and bounded in time, because tests and CI scripts call
them from traps and fixtures where a hang or a second broker would be worse than an error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from moderation.core.bootstrap import (
    STATE_FILE_NAME,
    BrokerState,
    is_broker_process,
    pid_alive,
    read_state,
    state_dir,
    write_state,
)
from moderation.core.errors import BrokerError
from moderation.core.settings import Settings, parse_host_port
from moderation.devtools.broker import probe
from moderation.devtools.broker.config import (
    KAFKA_VERSION,
    MIN_JAVA,
    SecureListener,
    jar_marker,
    jars_complete,
    new_cluster_id,
    parse_java_version,
    parse_properties,
    render_properties,
    scram_format_args,
    secure_listener_properties,
    server_properties,
    tail,
)

HOST = "127.0.0.1"
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
MAVEN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class BrokerPaths:
    """Where everything lives: jars per Kafka version (shared), state per broker."""

    version_dir: Path
    libs: Path
    marker: Path
    state_dir: Path
    config: Path
    log4j: Path
    data: Path
    log: Path
    state_file: Path
    lock: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerPaths:
        version_dir = (settings.cache_dir / "kafka" / KAFKA_VERSION).expanduser().absolute()
        state = state_dir(settings)
        return cls(
            version_dir=version_dir,
            libs=version_dir / "libs",
            marker=version_dir / "libs.complete.json",
            state_dir=state,
            config=state / "server.properties",
            log4j=state / "log4j2.properties",
            data=state / "data",
            log=state / "broker.log",
            state_file=state / STATE_FILE_NAME,
            lock=state / ".lock",
        )


@dataclass(frozen=True)
class UpResult:
    state: BrokerState
    started: bool  # False when an already running broker was reused


@dataclass(frozen=True)
class BrokerStatus:
    state: BrokerState | None
    alive: bool
    ready: bool
    orphans: tuple[int, ...]

    def describe(self) -> str:
        if self.state is None:
            if self.orphans:
                return f"no state file, but broker process(es) {list(self.orphans)} use this state dir"
            return "not running"
        where = f"{self.state.bootstrap} (pid {self.state.pid})"
        if not self.alive:
            return f"not running (stale state file for {where})"
        return f"running on {where}" if self.ready else f"starting or unresponsive on {where}"


# --- processes ---------------------------------------------------------------------------------------


def broker_pids(config: Path) -> list[int]:
    """Live brokers started with this config, found via /proc (Linux); [] where /proc is absent."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if is_broker_process(pid, config) and pid_alive(pid):
                found.append(pid)
    return sorted(found)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:  # we started it as a session leader: signal its whole group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def stop_process(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (Kafka's clean shutdown), then SIGKILL once ``timeout_s`` has passed."""
    _signal(pid, signal.SIGTERM)
    if _wait_dead(pid, timeout_s):
        return
    _signal(pid, signal.SIGKILL)
    if not _wait_dead(pid, 10.0):
        raise BrokerError(f"broker process {pid} survived SIGKILL; check it with `ps -p {pid}`.")


# --- ports and locks ---------------------------------------------------------------------------------


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST, exclude: tuple[int, ...] = ()) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise BrokerError("could not find a free TCP port on 127.0.0.1.")


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    """Exclusive lock so concurrent ``up``/``down`` calls (CI trap + fixture) serialize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"another process held {path} for {timeout_s:.0f} s while {what}; "
                        "if nothing else is using the broker, delete that file and retry."
                    ) from exc
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- the broker --------------------------------------------------------------------------------------


class LocalKafka:
    """Install, start, find and stop the project's local broker.

    ``secure``: also listen with SASL_SSL + SCRAM (tests of secure clients; give it its own state dir);
    the state's ``bootstrap`` is then that listener, ``port`` the loopback PLAINTEXT one probes use.
    """

    def __init__(
        self, settings: Settings | None = None, console: Console | None = None, secure: SecureListener | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.secure = secure
        self.paths = BrokerPaths.from_settings(self.settings)
        self.console = console or Console(stderr=True, soft_wrap=True)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- prerequisites --

    def java(self) -> str:
        """Path of a Java 17+ executable, or a BrokerError saying how to get one."""
        java = shutil.which("java")
        if java is None:
            raise BrokerError(
                f"Java {MIN_JAVA}+ is needed to run Kafka but `java` is not on PATH; install it "
                "(e.g. `apt-get install openjdk-17-jre-headless`, `brew install openjdk@17`)."
            )
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"`{java} -version` failed ({exc}); is the Java install broken?") from exc
        major = parse_java_version(out.stderr + out.stdout)
        if major < MIN_JAVA:
            raise BrokerError(
                f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {java} is Java {major}; "
                f"install a newer JDK/JRE and put it first on PATH."
            )
        return java

    def install(self) -> Path:
        """Resolve the broker jars with Maven once; later calls return the cached directory."""
        paths = self.paths
        if jars_complete(paths.libs, paths.marker):
            return paths.libs
        with file_lock(paths.version_dir / ".lock", MAVEN_TIMEOUT_S, "resolving Kafka jars"):
            if jars_complete(paths.libs, paths.marker):
                return paths.libs
            mvn = shutil.which("mvn")
            if mvn is None:
                raise BrokerError(
                    f"the Kafka jars are not in {paths.libs} yet and Maven (`mvn`) is not on PATH to "
                    "fetch them; install Maven 3.6+ (e.g. `apt-get install maven`) and retry."
                )
            pom = paths.version_dir / "pom.xml"
            pom.write_text(resources.files("moderation.devtools.broker").joinpath("pom.xml").read_text("utf-8"))
            partial = paths.version_dir / "libs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            cmd = [
                mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom),
                "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
            ]  # fmt: skip
            self.console.print(
                f"Resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central into {paths.libs} "
                "(first run only; about half a minute)…"
            )
            started = time.monotonic()
            with self._progress(f"mvn dependency:copy-dependencies (Kafka {KAFKA_VERSION})"):
                try:
                    out = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False,
                        stdin=subprocess.DEVNULL, cwd=paths.version_dir,
                    )  # fmt: skip
                except subprocess.TimeoutExpired as exc:
                    raise BrokerError(
                        f"Maven did not finish resolving Kafka jars within {MAVEN_TIMEOUT_S:.0f} s; "
                        "check network access to Maven Central (or a proxy in ~/.m2/settings.xml)."
                    ) from exc
            jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
            if out.returncode != 0 or f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
                last = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
                raise BrokerError(
                    f"Maven could not resolve the Kafka {KAFKA_VERSION} jars (exit {out.returncode}); it "
                    f"needs network access to Maven Central. Command: {' '.join(cmd)}\n{last}"
                )
            shutil.rmtree(paths.libs, ignore_errors=True)
            partial.rename(paths.libs)
            paths.marker.write_text(jar_marker(jars), encoding="utf-8")
            size_mb = sum(p.stat().st_size for p in paths.libs.glob("*.jar")) / 1e6
            self.console.print(f"Resolved {len(jars)} jars ({size_mb:.0f} MB) in {time.monotonic() - started:.0f} s.")
        return paths.libs

    # -- lifecycle --

    def up(self, port: int | None = None, timeout_s: float = START_TIMEOUT_S) -> UpResult:
        """Start the broker, or reuse the one already running; returns once it serves metadata."""
        java = self.java()
        libs = self.install()
        paths = self.paths
        with file_lock(paths.lock, timeout_s + 30, "starting the broker"):
            current = self._current_state()
            if current is not None:
                self._wait_ready(current, None, time.monotonic() + timeout_s, timeout_s)
                note = ""
                if port not in (None, 0, current.port):
                    note = f" (not {port}: run `moderation kafka down` first to move it)"
                self.console.print(f"Kafka already running on {current.bootstrap}{note}, pid {current.pid}.")
                return UpResult(current, started=False)
            for orphan in broker_pids(paths.config):
                self.console.print(f"Stopping broker pid {orphan} that has no state file (it holds the data dir).")
                stop_process(orphan)

            broker_port = self._choose_port(port)
            controller_port = free_port(exclude=(broker_port,))
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            props = server_properties(port=broker_port, controller_port=controller_port, data_dir=paths.data)
            bootstrap = f"{HOST}:{broker_port}"
            if self.secure is not None:
                secure_port = free_port(exclude=(broker_port, controller_port))
                props = secure_listener_properties(props, self.secure, port=secure_port, host=HOST)
                bootstrap = f"{HOST}:{secure_port}"
            header = f"Written by `moderation kafka up` (Kafka {KAFKA_VERSION}); rewritten on every start."
            paths.config.write_text(render_properties(props, header), encoding="utf-8")
            paths.log4j.write_text(
                resources.files("moderation.devtools.broker").joinpath("log4j2.properties").read_text("utf-8")
            )
            cluster_id = self._ensure_formatted(java, libs)

            if paths.log.exists():
                paths.log.replace(paths.log.with_name(paths.log.name + ".1"))
            started = time.monotonic()
            with open(paths.log, "wb") as log:
                proc = self._spawn([*self._java_cmd(java, libs), "kafka.Kafka", str(paths.config)], log)
            state = BrokerState(
                pid=proc.pid,
                port=broker_port,
                controller_port=controller_port,
                bootstrap=bootstrap,
                cluster_id=cluster_id,
                config=str(paths.config),
                log=str(paths.log),
                kafka_version=KAFKA_VERSION,
                started_at=time.time(),
            )
            write_state(paths.state_file, state)
            try:
                self._wait_ready(state, proc, started + timeout_s, timeout_s)
            except BaseException:
                stop_process(proc.pid, timeout_s=5.0)
                paths.state_file.unlink(missing_ok=True)
                raise
            self._proc = proc
            self.console.print(
                f"Kafka {KAFKA_VERSION} up on {state.bootstrap} (pid {proc.pid}, "
                f"{time.monotonic() - started:.1f} s); log: {paths.log}"
            )
            return UpResult(state, started=True)

    def down(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker (no-op when none runs); True when a process was stopped."""
        paths = self.paths
        with file_lock(paths.lock, timeout_s + 60, "stopping the broker"):
            state = read_state(paths.state_file)
            pids = set(broker_pids(paths.config))
            if state is not None and pid_alive(state.pid) and is_broker_process(state.pid, paths.config):
                pids.add(state.pid)
            if not pids:
                paths.state_file.unlink(missing_ok=True)
                self.console.print("Kafka is not running.")
                return False
            started = time.monotonic()
            with self._progress("Stopping Kafka"):
                for pid in sorted(pids):
                    stop_process(pid, timeout_s)
                    if self._proc is not None and self._proc.pid == pid:
                        self._proc.wait(timeout=5)
                        self._proc = None
            paths.state_file.unlink(missing_ok=True)
            self.console.print(
                f"Kafka stopped (pid {', '.join(map(str, sorted(pids)))}, {time.monotonic() - started:.1f} s)."
            )
            return True

    def status(self) -> BrokerStatus:
        state = read_state(self.paths.state_file)
        orphans = [p for p in broker_pids(self.paths.config) if state is None or p != state.pid]
        if state is None:
            return BrokerStatus(None, alive=False, ready=False, orphans=tuple(orphans))
        alive = pid_alive(state.pid) and is_broker_process(state.pid, self.paths.config)
        ready = alive and probe.is_ready(HOST, state.port)
        return BrokerStatus(state, alive=alive, ready=ready, orphans=tuple(orphans))

    # -- helpers --

    def _current_state(self) -> BrokerState | None:
        """The recorded broker if its process is alive; stale records are removed."""
        state = read_state(self.paths.state_file)
        if state is None:
            if self.paths.state_file.exists():
                self.console.print(f"Ignoring unreadable state file {self.paths.state_file}.")
                self.paths.state_file.unlink()
            return None
        if pid_alive(state.pid) and is_broker_process(state.pid, self.paths.config):
            return state
        self.console.print(f"Removing stale state file (pid {state.pid} is gone).")
        self.paths.state_file.unlink(missing_ok=True)
        return None

    def _choose_port(self, requested: int | None) -> int:
        if requested:
            if not port_free(requested):
                raise BrokerError(
                    f"port {requested} is already in use on {HOST}; pick another with --port, "
                    "or leave --port out to get a free one."
                )
            return requested
        _, preferred = parse_host_port(self.settings.bootstrap_servers)
        if requested is None and preferred and port_free(preferred):
            return preferred
        return free_port()

    def _java_cmd(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.paths.log4j}",
            f"-Dkafka.logs.dir={self.paths.state_dir}",
            "-cp",
            f"{libs}{os.sep}*",
        ]

    def _spawn(self, cmd: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Detached: its own session, so Ctrl-C in the terminal or the end of `make` leaves it up."""
        try:
            return subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd=self.paths.state_dir,
            )  # fmt: skip
        except OSError as exc:
            raise BrokerError(f"could not start {cmd[0]}: {exc}") from exc

    def _ensure_formatted(self, java: str, libs: Path) -> str:
        """Format the KRaft log dir once; later starts keep data and cluster id."""
        meta = self.paths.data / "meta.properties"
        if meta.is_file():
            cluster_id = parse_properties(meta.read_text("utf-8")).get("cluster.id")
            if cluster_id:
                return cluster_id
            shutil.rmtree(self.paths.data)
        cluster_id = new_cluster_id()
        cmd = [*self._java_cmd(java, libs), "kafka.tools.StorageTool", "format", "-t", cluster_id,
               "-c", str(self.paths.config)]  # fmt: skip
        if self.secure is not None:
            cmd += scram_format_args(self.secure)
        with self._progress("Formatting KRaft storage"):
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerError("formatting the Kafka storage took over 120 s; is the machine overloaded?") from exc
        if out.returncode != 0:
            raise BrokerError(
                f"`kafka-storage format` failed (exit {out.returncode}) for {self.paths.data}:\n"
                f"{(out.stdout + out.stderr).strip()[-2000:]}\nDelete {self.paths.state_dir} and retry."
            )
        return cluster_id

    def _wait_ready(
        self, state: BrokerState, proc: subprocess.Popen[bytes] | None, deadline: float, timeout_s: float
    ) -> None:
        def exited() -> str | None:
            if proc is not None:
                code = proc.poll()
                return None if code is None else f"exit code {code}"
            return None if pid_alive(state.pid) else "process gone"

        with self._progress(f"Waiting for Kafka on {state.bootstrap}"):
            while True:
                gone = exited()
                if gone is not None:
                    raise BrokerError(
                        f"Kafka exited during startup ({gone}). Last lines of {self.paths.log}:\n{tail(self.paths.log)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(
                        f"Kafka did not answer on {state.bootstrap} within {timeout_s:.0f} s; it was stopped. "
                        f"Last lines of {self.paths.log}:\n{tail(self.paths.log)}"
                    )
                if probe.is_ready(HOST, state.port, timeout_s=min(2.0, max(remaining, 0.1))):
                    return
                time.sleep(0.25)

    def _progress(self, description: str) -> contextlib.AbstractContextManager[object]:
        """A spinner with elapsed time on a terminal; silent when output is captured (CI, pytest)."""
        if not self.console.is_terminal:
            return contextlib.nullcontext()
        progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=self.console, transient=True,
        )  # fmt: skip
        progress.add_task(description, total=None)
        return progress

