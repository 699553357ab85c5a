"""Validation of what an agent may write back about itself (heartbeat, applied, health, monitor,
cmd results).

Each validator takes the decoded JSON body and returns the document to store, or raises
``BadBody`` naming the offending field, which the API turns into a 400.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

CMD_STATUSES = ("executing", "successful", "failed")
CMD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_OUTPUT_TAIL = 64 * 1024
# What one status document may take in etcd, which the instances of every cluster on a metadata
# cluster share: an output tail at its limit and the rest of a record fit.
MAX_STORED = 96 * 1024
DEFAULT_HEARTBEAT_INTERVAL = 5.0
MAX_HEARTBEAT_INTERVAL = 3600.0
# What changes at every beat without telling anything: a beat that differs from the stored
# document only in these is no news (``heartbeat_is_news``), and metad only renews its lease.
BEAT_CLOCK_FIELDS = frozenset({"time", "uptime", "received"})


class BadBody(ValueError):
    """A write-back body is malformed; ``field`` names the offending part."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.status = status


def bounded(doc: dict[str, Any]) -> str:
    """``doc`` as the JSON text to store, refused (413) past :data:`MAX_STORED` bytes."""
    text = json.dumps(doc)
    if len(text.encode()) > MAX_STORED:
        raise BadBody("body", f"the stored document would exceed the limit of {MAX_STORED} bytes", 413)
    return text


def _object(body: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadBody(field, "must be a JSON object")
    return body


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional_time(doc: dict[str, Any], field: str) -> None:
    value = doc.get(field)
    if value is not None and not _number(value) and not isinstance(value, str):
        raise BadBody(field, "must be a timestamp (seconds since the epoch or an ISO 8601 string) or null")


def _optional_str(doc: dict[str, Any], field: str, limit: int | None = None) -> None:
    value = doc.get(field)
    if value is None:
        return
    if not isinstance(value, str):
        raise BadBody(field, "must be a string or null")
    if limit is not None and len(value) > limit:
        raise BadBody(field, f"must be at most {limit} characters")


def heartbeat(body: Any) -> tuple[dict[str, Any], float]:
    """The heartbeat document and its interval (the lease lasts three intervals)."""
    doc = {} if body is None else dict(_object(body))
    interval = doc.get("interval", DEFAULT_HEARTBEAT_INTERVAL)
    if not _number(interval) or not 0 < interval <= MAX_HEARTBEAT_INTERVAL:
        raise BadBody("interval", f"must be a number of seconds in (0, {MAX_HEARTBEAT_INTERVAL:g}]")
    _optional_time(doc, "time")
    doc["interval"] = interval
    doc["received"] = time.time()
    return doc, float(interval)


def heartbeat_is_news(doc: dict[str, Any], stored: str | None) -> bool:
    """Whether ``doc`` says more than the stored heartbeat: another agent process (its ``pid`` or
    ``started``), version or interval. The stored document's ``time`` then stays the first beat
    of this agent's run, which is what "a heartbeat since T" (runtime.fallback) asks about."""
    if stored is None:
        return True
    try:
        before = json.loads(stored)
    except ValueError:
        return True
    if not isinstance(before, dict):
        return True
    keep = doc.keys() | before.keys()
    return any(doc.get(k) != before.get(k) for k in keep - BEAT_CLOCK_FIELDS)


def applied(body: Any) -> dict[str, Any]:
    doc = _object(body)
    revision = doc.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise BadBody("revision", "must be a non-negative integer")
    resources = doc.get("resources", {})
    if not isinstance(resources, dict):
        raise BadBody("resources", "must be an object of resource name → result")
    for name, result in resources.items():
        field = f"resources.{name}"
        result = _object(result, field)
        if not isinstance(result.get("ok"), bool):
            raise BadBody(f"{field}.ok", "must be true or false")
        _optional_str(result, "error")
    return doc


def health(body: Any) -> dict[str, Any]:
    """``ok`` is the node's verdict (past its threshold); ``failures`` the current streak of
    failed checks; ``action`` the result of the streak's ``action_cmd``."""
    doc = _object(body)
    if not isinstance(doc.get("ok"), bool):
        raise BadBody("ok", "must be true or false")
    _optional_str(doc, "error")
    _optional_time(doc, "time")
    failures = doc.get("failures")
    if failures is not None and (not isinstance(failures, int) or isinstance(failures, bool) or failures < 0):
        raise BadBody("failures", "must be a non-negative integer")
    if doc.get("action") is not None:
        action = _object(doc["action"], "action")
        if action.get("status") not in ("successful", "failed"):
            raise BadBody("action.status", "must be successful or failed")
        exit_code = action.get("exit_code")
        if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
            raise BadBody("action.exit_code", "must be an integer or null")
        _optional_str(action, "output_tail", MAX_OUTPUT_TAIL)
        _optional_time(action, "time")
    return doc


MONITOR_VALUES_MAX = 64  # a role declares at most as many monitor items (runtime.spec)
MONITOR_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


def monitor(body: Any) -> dict[str, Any]:
    """``values``: the role's monitor items of one run, name → finite number; ``error`` why a run
    gave none (its command failed, timed out, or printed nothing readable)."""
    doc = _object(body)
    values = _object(doc.get("values", {}), "values")
    if len(values) > MONITOR_VALUES_MAX:
        raise BadBody("values", f"at most {MONITOR_VALUES_MAX} items")
    for name, value in values.items():
        if not MONITOR_NAME.match(name):
            raise BadBody(f"values.{name[:64]}", "is not an item name (letters, digits and _)")
        if not _number(value):
            raise BadBody(f"values.{name}", "must be a finite number")
    _optional_str(doc, "error", MAX_OUTPUT_TAIL)
    _optional_time(doc, "time")
    return {"values": values, "error": doc.get("error"), "time": doc.get("time")}


def check_cmd_id(cmd_id: str) -> None:
    if not CMD_ID.match(cmd_id):
        raise BadBody("cmd_id", "must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")


def cmd_result(cmd_id: str, body: Any) -> dict[str, Any]:
    check_cmd_id(cmd_id)
    doc = _object(body)
    if doc.get("status") not in CMD_STATUSES:
        raise BadBody("status", f"must be one of {', '.join(CMD_STATUSES)}")
    exit_code = doc.get("exit_code")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise BadBody("exit_code", "must be an integer or null")
    if doc["status"] == "successful" and exit_code is None:
        raise BadBody("exit_code", "is required when status is successful")
    _optional_time(doc, "started")
    _optional_time(doc, "finished")
    _optional_str(doc, "output_tail", MAX_OUTPUT_TAIL)
    # The agent's stdout and stderr apart (each bounded as the merged tail is).
    _optional_str(doc, "stdout_tail", MAX_OUTPUT_TAIL)
    _optional_str(doc, "stderr_tail", MAX_OUTPUT_TAIL)
    return doc
