"""structlog set-up: JSON lines in production, pretty console in a terminal.

Standard-library loggers (faust, aiokafka, our engine) are routed through the same processors, so
one process writes one format. Post text never appears unless ``MODERATION_LOG_POST_TEXT`` is set
(the ``redact_text`` processor enforces it for every event, not only ours).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
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


def configure_logging(fmt: str = "auto", level: str = "info", *, log_post_text: bool = False) -> None:
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # chatty libraries: their info lines are per-connection noise
    for name in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str = "moderation", **context: Any) -> Any:
    return structlog.get_logger(name).bind(**context)
