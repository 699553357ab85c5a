"""The agent's loggers: structlog's bound loggers where structlog runs, a cheap line logger in
``pitrix-agent``'s own process.

A lone agent runs on every VM and starts often (``-onetime`` from cloud-init and cron), so its
logging must cost what confd's does: importing structlog took ~0.1 CPU-s and 5 MiB (~0.25 s and
10 MiB with rich installed), more than the rest of a one-shot render together. ``pitrix-agent``'s
``main`` calls ``configure``; from then on ``get_logger`` hands out ``LineLogger``s, which keep
structlog's bound context (``bind``) and write the same JSON lines (the keys in structlog's
order: bound context, the call's keys, ``event``, ``level``, ``timestamp``, ``exception``), or
one text line per event on a terminal. Where the agent is embedded (the simulator's light VMs,
benchmarks, tests) nothing configures this module and every logger is structlog's, configured by
the host process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Protocol, TextIO, cast

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class Logger(Protocol):
    """What the agent calls on a logger (structlog's FilteringBoundLogger has all of it)."""

    def bind(self, **new_values: Any) -> Logger: ...

    def debug(self, event: str, **kw: Any) -> Any: ...

    def info(self, event: str, **kw: Any) -> Any: ...

    def warning(self, event: str, **kw: Any) -> Any: ...

    def error(self, event: str, **kw: Any) -> Any: ...

    def exception(self, event: str, **kw: Any) -> Any: ...


class LineSettings:
    """Where and how line loggers write; ``level`` None while nothing configured them.

    A plain class, not a dataclass: each dataclass compiles its generated methods at import,
    ~1 ms apiece on a busy host, paid by every agent start.
    """

    __slots__ = ("confd", "json", "level", "stream")

    def __init__(self, level: int | None = None, json: bool = True, stream: TextIO | None = None) -> None:
        self.level = level
        self.json = json
        self.stream = stream
        self.confd = False  # confd's own lines (``-log-format text``), see ``confd_lines``


# Process-wide, as structlog's own configuration is: set once by pitrix-agent's main.
_SETTINGS = LineSettings()


def configure(
    level: str = "info", *, json_lines: bool | None = None, stream: TextIO | None = None, confd: bool = False
) -> None:
    """Make every later ``get_logger`` a line logger writing ``level`` and above to ``stream``.

    JSON lines unless ``stream`` is a terminal (then text), or always with
    ``PITRIX_LOG_FORMAT=json``, as ``pitrix.logs.configure`` decides; ``confd`` writes confd's
    lines instead (``-log-format text``).
    """
    out = stream or sys.stderr
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"log level: unknown level {level!r}")
    if json_lines is None:
        json_lines = not out.isatty() or os.environ.get("PITRIX_LOG_FORMAT") == "json"
    _SETTINGS.level, _SETTINGS.json, _SETTINGS.stream = numeric, json_lines, out
    _SETTINGS.confd = confd


def unconfigure() -> None:
    """Back to structlog's loggers (for tests that configure line loggers in-process)."""
    _SETTINGS.level, _SETTINGS.stream = None, None
    _SETTINGS.confd = False


def get_logger(name: str, **context: Any) -> Logger:
    """A logger bound to ``context``: a line logger once ``configure`` ran, else structlog's."""
    if _SETTINGS.level is None:
        from pitrix import logs

        return cast(Logger, logs.get_logger(name, **context))
    return LineLogger(_SETTINGS, context)


def timestamp() -> str:
    """UTC, ISO 8601 with microseconds and a Z: structlog's ``TimeStamper(fmt="iso", utc=True)``."""
    now = time.time()
    seconds = int(now)
    micros = round((now - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


class LineLogger:
    """A bound logger that formats and writes its line itself, with no processor chain."""

    __slots__ = ("_context", "_settings")

    def __init__(self, settings: LineSettings, context: dict[str, Any]) -> None:
        self._settings = settings
        self._context = context

    def bind(self, **new_values: Any) -> LineLogger:
        return LineLogger(self._settings, {**self._context, **new_values})

    def debug(self, event: str, **kw: Any) -> None:
        self._log(10, "debug", event, kw, False)

    def info(self, event: str, **kw: Any) -> None:
        self._log(20, "info", event, kw, False)

    def warning(self, event: str, **kw: Any) -> None:
        self._log(30, "warning", event, kw, False)

    def error(self, event: str, **kw: Any) -> None:
        self._log(40, "error", event, kw, False)

    def critical(self, event: str, **kw: Any) -> None:
        self._log(50, "critical", event, kw, False)

    def exception(self, event: str, **kw: Any) -> None:
        self._log(40, "error", event, kw, True)

    def _log(self, numeric: int, level: str, event: str, kw: dict[str, Any], exc_info: bool) -> None:
        settings = self._settings
        if settings.level is None or numeric < settings.level:
            return
        line = {**self._context, **kw, "event": event, "level": level, "timestamp": timestamp()}
        if exc_info and sys.exc_info()[0] is not None:
            import traceback  # only when there is a traceback to print

            line["exception"] = traceback.format_exc().rstrip("\n")
        out = settings.stream or sys.stderr
        if settings.confd:
            out.write(confd_lines(line, kw))
            out.flush()
            return
        out.write((json.dumps(line, default=repr) if settings.json else text_line(line)) + "\n")
        out.flush()


def text_line(line: dict[str, Any]) -> str:
    """One event as a person reads it: time, level, event, then key=value (traceback below)."""
    rest = {k: v for k, v in line.items() if k not in ("timestamp", "level", "event", "exception")}
    head = f"{line['timestamp']} [{line['level']:<7}] {line['event']}"
    pairs = "".join(
        f" {k}={v!r}" if isinstance(v, str) and " " in v else f" {k}={v}" for k, v in rest.items()
    )
    tail = f"\n{line['exception']}" if "exception" in line else ""
    return head + pairs + tail


# The agent's events that confd logs too, as confd words them (its resource.go and confd.go); the
# others are written as "event key=value ...".
_CONFD_WORDS: dict[str, tuple[str, ...]] = {
    "destination updated": ("Target config {dest} out of sync", "Target config {dest} has been updated"),
    "in sync": ("Target config {dest} in sync",),
    "noop: destination not modified": ("Noop mode enabled. {dest} will not be modified",),
    "check_cmd rejected the staged file": ("Config check failed: {error}",),
    "reload failed": ("{error}",),
    "render failed": ("{error}",),
    "apply failed": ("{error}",),
    "backend error": ("{error}",),
    "starting": ("Backend set to {backend}", "Starting confd", "Backend source(s) set to {sources}"),
}
_CONFD_LEVELS = {"critical": "FATAL"}


def confd_lines(line: dict[str, Any], own: dict[str, Any]) -> str:
    """One event as confd logs it: ``time host program[pid]: LEVEL message`` (time RFC 3339, local
    zone, as Go's ``time.RFC3339``; program is ``argv[0]``, as confd's tag).

    ``own`` is what the call itself passed (bound context is written only where confd's wording
    names it).
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    stamp = stamp[:-5] + "Z" if stamp.endswith("+0000") else f"{stamp[:-2]}:{stamp[-2:]}"
    level = _CONFD_LEVELS.get(line["level"], line["level"].upper())
    program = sys.argv[0] if sys.argv and sys.argv[0] else "pitrix-agent"
    head = f"{stamp} {os.uname().nodename} {program}[{os.getpid()}]: {level} "
    words = _CONFD_WORDS.get(line["event"])
    fields = {k: v for k, v in line.items() if k not in ("event", "level", "timestamp", "exception")}
    try:
        messages = [w.format(**fields) for w in words] if words else None
    except (KeyError, IndexError):
        messages = None
    if messages is None:
        pairs = "".join(
            f" {k}={v!r}" if isinstance(v, str) and " " in v else f" {k}={v}" for k, v in own.items()
        )
        messages = [line["event"] + pairs]
    tail = f"{line['exception']}\n" if "exception" in line else ""
    return "".join(f"{head}{m}\n" for m in messages) + tail
