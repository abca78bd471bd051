"""Who this worker is to the consumer group: a stable ``group.instance.id`` (static membership).

With a stable id, a worker that crashes and comes back gets its partitions again at once; without
one, the group waits for the dead member's session to time out first (~a minute by default). The id
must be stable across restarts *and* unique among live members (the broker fences a duplicate):

- ``MODERATION_GROUP_INSTANCE_ID`` when set (``none`` turns static membership off);
- else ``MODERATION_WORKER_ID`` (Kubernetes sets it to the pod name: stable over container restarts);
- else ``<hostname>-<slot>``, the slot being the lowest one not held by a live local worker of the same
  group. Slots are ``flock`` locks, released by the kernel when a process dies — even by SIGKILL — so
  a restarted worker takes back the slot, and the id, of the one it replaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import socket
from pathlib import Path
from typing import IO

MAX_SLOTS = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(name: str) -> str:
    """Kafka accepts most characters, but ids also end up in file names and metric labels."""
    return _UNSAFE.sub("-", name).strip("-")[:200] or "worker"


class SlotLock:
    """An exclusive lock on one numbered slot file; held for the life of the process."""

    def __init__(self, directory: Path, group: str) -> None:
        self.directory = directory
        self.group = sanitize(group)
        self.slot: int | None = None
        self._file: IO[bytes] | None = None

    def acquire(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            handle = open(self.directory / f"{self.group}.{slot}.lock", "ab")  # noqa: SIM115 - held open on purpose
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._file, self.slot = handle, slot
            return slot
        raise RuntimeError(f"all {MAX_SLOTS} worker slots in {self.directory} are taken")

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def group_instance_id(
    configured: str, worker_id: str, group: str, slot_dir: Path, hostname: str | None = None
) -> tuple[str | None, SlotLock | None]:
    """The id to join with (None: dynamic membership) and the slot lock to keep while running."""
    if configured.strip().lower() == "none":
        return None, None
    if configured.strip():
        return sanitize(configured), None
    if worker_id.strip():
        return sanitize(worker_id), None
    lock = SlotLock(slot_dir, group)
    slot = lock.acquire()
    return sanitize(f"{hostname or socket.gethostname()}-{slot}"), lock
