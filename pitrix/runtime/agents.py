"""What the cluster's agents report, as a live view fed by metad's watch stream.

Agents write heartbeats, applied revisions and command results to ``/_pitrix/status/<cid>/``;
the runtime follows them through one ``/v1/watch`` stream per cluster and waits on conditions over
that view, never by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.metad import keyspace
from pitrix.metad.client import MetadManagementClient


def decoded(value: Any) -> Any:
    """An agent's report as it wrote it: metad keeps reports as JSON text."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


class AgentStatus:
    """``/_pitrix/status/<cid>/`` as ``{instance_id: {relative key: decoded value}}``."""

    def __init__(self, client: MetadManagementClient, cluster_id: str) -> None:
        self.client = client
        self.cluster_id = cluster_id
        self.prefix = keyspace.cluster_status_prefix(cluster_id)
        self.view: dict[str, dict[str, Any]] = {}
        # The metad revision each key was last written at: a report's age, on metad's clock.
        self.revisions: dict[str, dict[str, int]] = {}
        self._changed = asyncio.Condition()
        # A resync's state while it arrives (view, revisions) and how many of its puts are to come.
        self._staged: tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]] | None = None
        self._staged_left = 0
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.log = get_logger("pitrix.agents", cluster_id=cluster_id)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name=f"agent-status-{self.cluster_id}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _follow(self) -> None:
        try:
            # From revision 1: the replay (or, once compacted, metad's resync) is the current state.
            async for event in self.client.watch(self.prefix, from_revision=1):
                await self._apply(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            self.log.error("agent status stream ended", error=str(exc))
            async with self._changed:
                self._changed.notify_all()

    async def _apply(self, event: dict[str, Any]) -> None:
        """One event of the stream. A resync's state is staged and swapped in whole when its last
        put arrives: a waiter never sees the empty view in between (every node silent)."""
        kind = event.get("type")
        async with self._changed:
            if kind == "resync":
                self._staged = ({}, {})
                self._staged_left = int(event.get("count") or 0)
            elif kind in ("put", "delete"):
                revision = int(event.get("revision") or 0)
                view, revisions = self.view, self.revisions
                if self._staged is not None:
                    view, revisions = self._staged
                    self._staged_left -= 1
                self._set(
                    view, revisions, event["key"], event.get("value"), revision, deleted=kind == "delete"
                )
            if self._staged is not None and self._staged_left <= 0:
                self.view, self.revisions = self._staged
                self._staged = None
            if self._staged is None:
                self._changed.notify_all()

    def _set(
        self,
        view: dict[str, dict[str, Any]],
        revisions: dict[str, dict[str, int]],
        key: str,
        value: Any,
        revision: int,
        *,
        deleted: bool,
    ) -> None:
        parsed = keyspace.parse_status(key)
        if parsed is None or parsed.cluster_id != self.cluster_id:
            return
        if deleted:
            view.get(parsed.instance_id, {}).pop(parsed.report, None)
            revisions.get(parsed.instance_id, {}).pop(parsed.report, None)
            return
        revisions.setdefault(parsed.instance_id, {})[parsed.report] = revision
        view.setdefault(parsed.instance_id, {})[parsed.report] = decoded(value)

    async def wait_for(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float) -> None:
        """Until ``predicate(view)`` holds; TimeoutError after ``timeout`` seconds."""

        async def until() -> None:
            async with self._changed:
                while not predicate(self.view):
                    if self._error is not None:
                        raise RuntimeError(f"agent status stream failed: {self._error}")
                    await self._changed.wait()

        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
            await until()

    def command_result(self, instance_id: str, command_id: str) -> dict[str, Any] | None:
        result = self.view.get(instance_id, {}).get(keyspace.command_report(command_id))
        return result if isinstance(result, dict) else None

    def has_heartbeat(self, instance_id: str) -> bool:
        return keyspace.HEARTBEAT in self.view.get(instance_id, {})

    def applied(self, instance_id: str) -> dict[str, Any]:
        """The agent's last ``applied`` report (``{"revision", "resources"}``), empty if none yet."""
        applied = self.view.get(instance_id, {}).get(keyspace.APPLIED)
        return applied if isinstance(applied, dict) else {}

    def applied_revision(self, instance_id: str) -> int:
        applied = self.view.get(instance_id, {}).get(keyspace.APPLIED)
        if isinstance(applied, dict):
            return int(applied.get("revision") or 0)
        return 0

    def health(self, instance_id: str) -> dict[str, Any] | None:
        """The agent's last health report (``{"ok", "error", "time"}``), None if it made none."""
        health = self.view.get(instance_id, {}).get("health")
        return health if isinstance(health, dict) else None

    def healthy(self, instance_id: str, since: int = 0) -> bool | None:
        """The verdict of the agent's last health check if reported after metad revision ``since``.

        None when there is no such report: a verdict from before (the last one before a stop, say)
        tells nothing about the services as they are now. Revisions, not the report's time: the
        VM's clock is not pitrixd's.
        """
        health = self.health(instance_id)
        if health is None or self.revisions.get(instance_id, {}).get("health", 0) <= since:
            return None
        return health.get("ok") is True

    def passing(self, instance_id: str, since: int = 0) -> bool | None:
        """Whether the agent's last check, reported after metad revision ``since``, passed.

        Stricter than ``healthy``: a node below its ``unhealthy_threshold`` still reports ``ok``
        after a failed check, but a gate (start, a rollout's batch, a restart) wants the service
        working now, so one failure in the current streak (``failures``) is not a pass.
        """
        verdict = self.healthy(instance_id, since)
        if verdict is None:
            return None
        return verdict and not (self.health(instance_id) or {}).get("failures")

    def unhealthy(self, instance_id: str, threshold: int) -> bool:
        """Whether the agent's last report has ``threshold`` or more failed checks in a row (a
        node that never passed is not ``ok`` before that, but has not failed long enough)."""
        health = self.health(instance_id)
        if health is None or health.get("ok") is not False:
            return False
        failures = health.get("failures")
        return isinstance(failures, int) and failures >= threshold
