"""What every long-running process (worker, LLM reviewer, console) does first, and how it exits.

Exit codes, the same for each: **0** stopped on request · **1** fatal error while running · **2** bad
configuration (a setting, a model, a policy, a port) · **3** the broker could not be reached or refused
our credentials.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from moderation.core.bootstrap import resolved
from moderation.core.errors import BrokerError
from moderation.core.logs import configure_logging, get_logger
from moderation.core.settings import Settings, load_settings, unknown_env_warnings

EXIT_FATAL = 1
EXIT_CONFIG = 2
EXIT_BROKER = 3


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad setting, named as the operator sets it."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        env = f"MODERATION_{field.upper()}" if error["loc"] else "settings"
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and len(str(value)) < 80 else ""
        problems.append(f"{env}: {error['msg']}{shown}")
    return "invalid settings: " + "; ".join(problems)


def settings_for_process(
    logger: str, *, post_text_in_logs: bool = True, broker: Callable[[Settings], bool] | None = None
) -> Settings | None:
    """Settings from the environment with logging configured from them and ``bootstrap_servers`` set to
    the broker this process joins (:mod:`moderation.core.bootstrap`; logged as ``kafka_bootstrap`` with
    its source). ``None`` — after one clear ``startup_failed`` line — when a setting is invalid or no
    broker is named (exit with EXIT_CONFIG). A ``MODERATION_*`` variable no setting reads (a misspelling)
    is one ``unknown_setting`` warning with the nearest valid name.

    ``post_text_in_logs=False`` ignores MODERATION_LOG_POST_TEXT for processes that must never log text.
    ``broker``: whether these settings need Kafka at all (the scoring API only with MODERATION_API_AUDIT);
    without it no broker is resolved and none is required.
    """
    try:
        settings = load_settings()
    except ValidationError as exc:
        configure_logging()
        get_logger(logger).critical("startup_failed", error=describe_settings_error(exc))
        return None
    configure_logging(
        settings.log_format,
        settings.log_level,
        log_post_text=settings.log_post_text and post_text_in_logs,
        repeat_window_s=settings.log_repeat_window_s,
    )
    for warning in unknown_env_warnings():
        get_logger(logger).warning("unknown_setting", detail=warning)
    if broker is not None and not broker(settings):
        return settings
    try:
        settings, where = resolved(settings)
    except BrokerError as exc:
        get_logger(logger).critical("startup_failed", error=str(exc))
        return None
    get_logger(logger).info("kafka_bootstrap", bootstrap=where.servers, source=where.source)
    return settings
