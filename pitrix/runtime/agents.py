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
from pitrix.metad.client import MetadManagementClient


class AgentStatus:
    """``/_pitrix/status/<cid>/`` as ``{instance_id: {relative key: decoded value}}``."""

    def __init__(self, client: MetadManagementClient, cluster_id: str) -> None:
        self.client = client
        self.cluster_id = cluster_id
        self.prefix = f"/_pitrix/status/{cluster_id}/"
        self.view: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Condition()
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
        kind = event.get("type")
        async with self._changed:
            if kind == "resync":
                self.view.clear()
            elif kind in ("put", "delete"):
                self._set(event["key"], event.get("value"), deleted=kind == "delete")
            self._changed.notify_all()

    def _set(self, key: str, value: Any, *, deleted: bool) -> None:
        if not key.startswith(self.prefix):
            return
        instance_id, _, rest = key[len(self.prefix) :].partition("/")
        if deleted:
            self.view.get(instance_id, {}).pop(rest, None)
            return
        decoded: Any = value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                decoded = json.loads(value)
        self.view.setdefault(instance_id, {})[rest] = decoded

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
        result = self.view.get(instance_id, {}).get(f"cmd/{command_id}")
        return result if isinstance(result, dict) else None

    def has_heartbeat(self, instance_id: str) -> bool:
        return "heartbeat" in self.view.get(instance_id, {})

    def applied(self, instance_id: str) -> dict[str, Any]:
        """The agent's last ``applied`` report (``{"revision", "resources"}``), empty if none yet."""
        applied = self.view.get(instance_id, {}).get("applied")
        return applied if isinstance(applied, dict) else {}

    def applied_revision(self, instance_id: str) -> int:
        applied = self.view.get(instance_id, {}).get("applied")
        if isinstance(applied, dict):
            return int(applied.get("revision") or 0)
        return 0
