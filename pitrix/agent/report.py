"""Status write-back: where the agent tells the runtime what it did.

With the metad backend the reports go to metad's instance API (``/self/status/...``); with the
other backends there is no metadata service to report to, so the reports are logged, which is all
a confd-style standalone agent can do with them.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from pitrix.agent.errors import RejectedError
from pitrix.agent.log import get_logger

# The metad key space is loaded by the first report that needs it: a one-shot render on the file
# backend (``LogReporter``) does not.
if TYPE_CHECKING:  # aiohttp is loaded only when the metad backend is used
    from pitrix.agent.metad_client import MetadClient

AGENT_VERSION = "0.1.0"


def utc_now() -> str:
    """``datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``, the same string, from ``time``:
    every watching agent reports, and ``datetime`` was ~0.4 MiB of its resident memory."""
    seconds, ns = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1000:06d}Z"


class Reporter(Protocol):
    async def heartbeat(self) -> None: ...

    async def applied(self, revision: int, resources: dict[str, dict[str, Any]]) -> None: ...

    async def command(self, cmd_id: str, record: dict[str, Any]) -> None: ...

    async def health(self, ok: bool, error: str | None, details: dict[str, Any] | None = None) -> None: ...

    async def monitor(self, values: dict[str, float], error: str | None = None) -> None: ...


class MetadReporter:
    """PUTs under ``/self/status``; errors propagate (``BackendError``) so callers can retry.

    A metad without pitrix's status API (Go metad, AppCenter's) answers 404: the first such answer
    turns every report off with one log line, rather than a warning and a retry every round.
    """

    def __init__(self, client: MetadClient, heartbeat_interval: float = 5.0) -> None:
        self._client = client
        self.off = False
        self._log = get_logger("pitrix.agent.report")
        self._interval = heartbeat_interval
        self._started = time.monotonic()
        # Which run of the agent beats: metad writes a beat only when this (or pid, version,
        # interval) changes, so a restarted agent must say it is a new one even with the old pid.
        self._run_began = utc_now()

    async def _put(self, report: str, body: dict[str, Any], *more: str) -> None:
        """PUT ``body`` at ``/self/status/<report>[/<more>...]`` (``keyspace.self_status``)."""
        from pitrix.metad import keyspace

        path = keyspace.self_status(getattr(keyspace, report), *more)
        if self.off:
            return
        try:
            await self._client.put(path, body)
        except RejectedError as exc:
            from pitrix.agent.metad_client import NotServed  # loaded with the client already

            if not isinstance(exc, NotServed):
                raise
            self.off = True
            self._log.warning("metad has no status API (HTTP 404): status reports off", error=str(exc))

    async def heartbeat(self) -> None:
        await self._put(
            "HEARTBEAT",
            {
                "time": utc_now(),
                "pid": os.getpid(),
                "started": self._run_began,
                "uptime": round(time.monotonic() - self._started, 3),
                "version": AGENT_VERSION,
                # metad keeps the heartbeat lease for a few intervals: it must know ours.
                "interval": self._interval,
            },
        )

    async def applied(self, revision: int, resources: dict[str, dict[str, Any]]) -> None:
        await self._put("APPLIED", {"revision": revision, "resources": resources})

    async def command(self, cmd_id: str, record: dict[str, Any]) -> None:
        await self._put("CMD", record, quote(cmd_id, safe=""))

    async def health(self, ok: bool, error: str | None, details: dict[str, Any] | None = None) -> None:
        """``details``: the failure streak (``failures``) and the streak's ``action`` result."""
        await self._put(
            "HEALTH",
            {"ok": ok, "error": error, "time": utc_now(), **(details or {})},
        )

    async def monitor(self, values: dict[str, float], error: str | None = None) -> None:
        """The role's monitor items of one run (agent/monitor.py); ``error`` when it gave none."""
        await self._put("MONITOR", {"values": values, "error": error, "time": utc_now()})


class LogReporter:
    """For backends without a metadata service: the reports go to the log."""

    def __init__(self) -> None:
        self._log = get_logger("pitrix.agent.report")

    async def heartbeat(self) -> None:
        self._log.debug("heartbeat")

    async def applied(self, revision: int, resources: dict[str, dict[str, Any]]) -> None:
        self._log.info("applied", revision=revision, resources=resources)

    async def command(self, cmd_id: str, record: dict[str, Any]) -> None:
        self._log.info("command status", cmd_id=cmd_id, **record)

    async def health(self, ok: bool, error: str | None, details: dict[str, Any] | None = None) -> None:
        self._log.info("health", ok=ok, error=error, **(details or {}))

    async def monitor(self, values: dict[str, float], error: str | None = None) -> None:
        self._log.info("monitor", values=values, error=error)
