"""structlog set-up: JSON lines in production, pretty console in a terminal.

Standard-library loggers (faust, aiokafka, our engine) are routed through the same processors, so
one process writes one format. Post text never appears unless ``MODERATION_LOG_POST_TEXT`` is set
(the ``redact_text`` processor enforces it for every event, not only ours).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

_TEXT_KEYS = ("text", "post_text")


def redact_text(allow: bool) -> structlog.types.Processor:
    def processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not allow:
            for key in _TEXT_KEYS:
                if key in event:
                    event[key] = "[redacted]"
        return event

    return processor


LIBRARY_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "aiohttp", "asyncio")


@dataclass(slots=True)
class _Repeats:
    since: float
    count: int = 0


class RepeatSuppressor(logging.Filter):
    """Lets the first of a run of identical library log lines through and counts the rest.

    During a broker outage aiokafka logs every reconnect attempt — thousands of lines a second. Lines
    are "identical" when logger, level and message template match (the arguments, e.g. a node id or
    an errno, may differ). Within ``window_s`` of the first, repeats are counted, not printed;
    :meth:`flush` (called periodically) prints one summary per run, and the next occurrence after the
    window prints again. So an outage costs one line when it starts plus one summary per window.
    """

    def __init__(
        self,
        window_s: float,
        *,
        prefixes: tuple[str, ...] = LIBRARY_LOGGERS,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefixes = prefixes
        self.clock = clock
        self.max_keys = max_keys
        self.runs: dict[tuple[str, int, str], _Repeats] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.window_s <= 0 or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        run = self.runs.get(key)
        if run is not None and now - run.since < self.window_s:
            run.count += 1
            return False
        if run is not None and run.count:
            record.msg = f"{record.msg} [{run.count} similar lines suppressed in the previous {self.window_s:g} s]"
        if len(self.runs) >= self.max_keys:
            self.runs.clear()
        self.runs[key] = _Repeats(since=now)
        return True

    def flush(self, emit: Callable[..., Any]) -> int:
        """Summarise runs whose window has ended: ``emit(event, **fields)`` once per run with repeats."""
        now = self.clock()
        summarised = 0
        for key, run in list(self.runs.items()):
            if now - run.since < self.window_s:
                continue
            del self.runs[key]
            if run.count:
                name, level, message = key
                emit(
                    "log_lines_suppressed",
                    source=name,
                    source_level=logging.getLevelName(level).lower(),
                    message=message[:300],
                    count=run.count,
                    window_s=self.window_s,
                )
                summarised += 1
        return summarised


class LevelCounter(logging.Filter):
    """Counts the warnings and errors (error and critical) logged, by every logger, for the worker's
    periodic summary line; lets every record through. Sits before the repeat suppressor, so a
    suppressed repeat still counts."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"warning": 0, "error": 0}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.counts["error"] += 1
        elif record.levelno >= logging.WARNING:
            self.counts["warning"] += 1
        return True

    def take(self) -> dict[str, int]:
        """The counts since the last call, and a fresh start."""
        counts, self.counts = self.counts, {"warning": 0, "error": 0}
        return counts


_suppressor: RepeatSuppressor | None = None
_counter: LevelCounter | None = None


def repeat_suppressor() -> RepeatSuppressor | None:
    """The suppressor :func:`configure_logging` installed (None before it ran)."""
    return _suppressor


def logged_since_last_call() -> dict[str, int]:
    """Warnings and errors logged since the previous call (zeros before :func:`configure_logging` ran)."""
    return _counter.take() if _counter is not None else {"warning": 0, "error": 0}


def configure_logging(
    fmt: str = "auto", level: str = "info", *, log_post_text: bool = False, repeat_window_s: float = 30.0
) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_text(log_post_text),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    global _suppressor, _counter
    _suppressor = RepeatSuppressor(repeat_window_s)
    _counter = LevelCounter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_counter)
    handler.addFilter(_suppressor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # chatty libraries: their info lines are per-connection noise
    for name in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str = "moderation", **context: Any) -> Any:
    return structlog.get_logger(name).bind(**context)
