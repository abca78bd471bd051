"""``python -m moderation.devtools.loadtest``: the Locust load test, headless, against the local broker + one worker.

What ``make loadtest`` runs. It starts (or reuses) the project's local Kafka broker, starts one real
``moderation worker`` process on run-private topics, runs ``locust --headless -f
loadtest/locustfile.py`` at ``--rate`` posts/s for ``--duration``, writes Locust's HTML report and
CSV files to ``--out``, prints a summary, then stops the worker, deletes the run's topics and stops
the broker if it started it. Exit code 0 only if Locust recorded decisions and no failures.

The worker and Locust inherit this process's environment, so ``MODERATION_MODEL_DIR`` /
``MODERATION_POLICY_FILE`` / ``MODERATION_MAX_BATCH`` ... configure what is load-tested.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from moderation.core.errors import ConfigError, ModerationError
from moderation.core.settings import PACKAGE_DIR, Settings, load_settings
from moderation.devtools.launch import OUTPUTS, WorkerProcess, kafka_broker, topic_env

REPO_DIR = PACKAGE_DIR.parent
LOCUSTFILE = REPO_DIR / "loadtest" / "locustfile.py"
CSV_PREFIX = "loadtest"


@dataclass(frozen=True)
class Row:
    """One line of Locust's ``*_stats.csv``."""

    type: str
    name: str
    requests: int
    failures: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rps: float


@dataclass(frozen=True)
class Summary:
    rows: list[Row]

    @property
    def total(self) -> Row:
        return next(r for r in self.rows if r.name == "Aggregated")

    @property
    def decided(self) -> int:
        return sum(r.requests - r.failures for r in self.rows if r.name in ("allow", "review", "block"))

    @property
    def failures(self) -> int:
        return self.total.failures


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # "N/A" for entries without successful samples
        return math.nan


def read_stats(path: Path) -> Summary:
    """Parse Locust's ``<prefix>_stats.csv``."""
    with path.open(newline="") as fh:
        rows = [
            Row(
                type=r["Type"],
                name=r["Name"],
                requests=int(r["Request Count"]),
                failures=int(r["Failure Count"]),
                median_ms=_num(r["Median Response Time"]),
                p95_ms=_num(r["95%"]),
                p99_ms=_num(r["99%"]),
                max_ms=_num(r["Max Response Time"]),
                rps=_num(r["Requests/s"]),
            )
            for r in csv.DictReader(fh)
        ]
    if not any(r.name == "Aggregated" for r in rows):
        raise ConfigError(f"{path} has no Aggregated row: did Locust run?")
    return Summary(rows)


def parse_duration(text: str) -> float:
    """Locust's run-time syntax (``90``, ``60s``, ``2m``, ``1h30m``) in seconds."""
    text = text.strip().lower()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in "hms" and number:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
        else:
            raise ConfigError(f"cannot read duration {text!r}: use e.g. 60s, 2m, 1h30m")
    if number:
        raise ConfigError(f"cannot read duration {text!r}: a number needs a unit (h, m or s)")
    return total


def users_for(rate: float) -> int:
    """One user per post/s up to 50 users (each user then posts at rate/users per second)."""
    return max(1, min(50, math.ceil(rate)))


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 15)
    try:
        await asyncio.wait_for(admin.delete_topics(topics), 15)
    finally:
        await admin.close()


def summarize(console: Console, summary: Summary, rate: float, seconds: float) -> None:
    table = Table(title=f"Locust: produce → decision at {rate:g} posts/s for {seconds:g}s")
    for col in ("type", "name", "reqs", "fails", "p50 ms", "p95 ms", "p99 ms", "max ms", "/s"):
        table.add_column(col, justify="left" if col in ("type", "name") else "right")
    for r in summary.rows:
        table.add_row(
            r.type,
            r.name,
            str(r.requests),
            str(r.failures),
            f"{r.median_ms:.0f}",
            f"{r.p95_ms:.0f}",
            f"{r.p99_ms:.0f}",
            f"{r.max_ms:.0f}",
            f"{r.rps:.1f}",
        )
    console.print(table)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moderation.devtools.loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=14.0, help="Posts per second (14 ≈ 50k posts/hour).")
    parser.add_argument("--duration", default="60s", help="How long Locust produces (Locust syntax: 60s, 2m).")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "loadtest" / "report", help="Report directory.")
    parser.add_argument("--decision-timeout", type=float, default=30.0, help="Seconds before a post counts lost.")
    parser.add_argument("--malformed-share", type=float, default=0.02, help="Share of broken messages (→ DLQ).")
    parser.add_argument("--users", type=int, default=None, help="Locust users (default: one per post/s, ≤ 50).")
    parser.add_argument("--locustfile", type=Path, default=LOCUSTFILE)
    args = parser.parse_args(argv)
    seconds = parse_duration(args.duration)
    if args.rate <= 0 or seconds <= 0:
        raise ConfigError("--rate and --duration must be positive")
    if not args.locustfile.exists():
        raise ConfigError(f"no locustfile at {args.locustfile}")

    console = Console(stderr=True)
    settings = load_settings()
    with kafka_broker(settings, console) as bootstrap:
        return _run(args, seconds, settings, bootstrap, console)


def _run(args: argparse.Namespace, seconds: float, settings: Settings, bootstrap: str, console: Console) -> int:
    prefix = f"loadtest-{int(time.time())}-{os.getpid()}"
    topics = {name: f"{prefix}.{name}" for name in ("posts", *OUTPUTS)}
    env = topic_env(bootstrap, topics, f"{prefix}-workers")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{CSV_PREFIX}_*.csv"):
        old.unlink()
    users = args.users or users_for(args.rate)
    code = 1
    (out / "worker.log").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="moderation-loadtest-") as tmp:
        worker = WorkerProcess("loadtest-worker", {**env, "MODERATION_CACHE_DIR": tmp}, out / "worker.log")
        try:
            with console.status("starting a worker (models, consumer group) …"):
                worker.wait_ready(180)
            console.print(f"worker ready on {bootstrap}; Locust: {users} users, {args.rate:g} posts/s, {args.duration}")
            cmd = [
                sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless", "--only-summary",
                "--users", str(users), "--spawn-rate", str(users), "--run-time", args.duration,
                "--stop-timeout", "5", "--html", str(out / "index.html"), "--csv", str(out / CSV_PREFIX),
                "--post-rate", str(args.rate), "--decision-timeout", str(args.decision_timeout),
                "--malformed-share", str(args.malformed_share), "--loglevel", "WARNING",
            ]  # fmt: skip
            locust_env = {**os.environ, **env}
            budget = seconds + 2 * args.decision_timeout + 120
            try:
                proc = subprocess.run(cmd, env=locust_env, timeout=budget, check=False)
            except subprocess.TimeoutExpired:
                console.print(f"[red]Locust did not finish within {budget:.0f}s[/]")
                return 1
            stats_path = out / f"{CSV_PREFIX}_stats.csv"
            if not stats_path.exists():
                console.print(f"[red]Locust wrote no {stats_path} (exit {proc.returncode})[/]")
                return 1
            summary = read_stats(stats_path)
            summarize(console, summary, args.rate, seconds)
            ok = proc.returncode == 0 and summary.failures == 0 and summary.decided > 0
            console.print(
                f"{'[green]OK' if ok else '[red]FAILED'}[/]: {summary.decided} decisions, {summary.failures} failures; "
                f"report {out / 'index.html'}, CSV {out / CSV_PREFIX}_*.csv, worker log {out / 'worker.log'}"
            )
            code = 0 if ok else 1
        finally:
            exit_code = worker.terminate(settings.shutdown_grace_s + 10)
            console.print(f"worker stopped (exit {exit_code})")
            with contextlib.suppress(Exception):
                asyncio.run(_delete_topics(bootstrap, list(topics.values())))
    return code


def main() -> None:
    try:
        raise SystemExit(run())
    except ModerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
