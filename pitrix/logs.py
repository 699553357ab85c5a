"""Logging setup shared by every pitrix process.

structlog everywhere, with context bound by the caller (cluster_id, instance_id, step). On a
terminal the output is for people; anywhere else it is one JSON object per line for machines.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def configure(level: str = "info", *, json: bool | None = None, stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty() or os.environ.get("PITRIX_LOG_FORMAT") == "json"
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level: unknown level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = console_renderer(colors=out.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, format="%(name)s: %(message)s")


def console_renderer(*, colors: bool) -> structlog.dev.ConsoleRenderer:
    """structlog's console lines, with tracebacks as Python prints them.

    structlog's default draws a rich traceback with every frame's locals, synchronously on the
    event loop: ~200 ms for one step failure on a quiet host and seconds under load, long enough
    for a replica to miss its lease renewal and drop every cluster it owns.
    """
    return structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)


def module_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger a module may make at import time, before ``configure`` has run.

    It stays a lazy proxy: each call logs with the configuration in force then. ``get_logger``'s
    bound logger would keep structlog's defaults (stdout, no level filter) for good.
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


def get_logger(name: str, **context: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to ``name`` and any extra context."""
    return structlog.get_logger(name).bind(**context)
