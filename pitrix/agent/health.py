"""The role's health check: which command, how often, and the loop that runs it and reports.

The check comes from the metadata when the runtime published one (``<prefix>/health/{cmd,
interval,timeout}``, which metad projects from ``/clusters/<cid>/health/<role>/...``), so an app
version's health check reaches its instances without touching their images; the agent config's
``health_cmd`` is the fallback for images that carry their own. Each round hands the current
check to the checker, which restarts its cycle when the check changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import AgentError
from pitrix.agent.report import Reporter
from pitrix.agent.shell import run_shell
from pitrix.logs import get_logger
from pitrix.metad import keyspace

OUTPUT_TAIL = 500


@dataclass(frozen=True)
class HealthCheck:
    cmd: str
    interval: float
    timeout: float


def health_from_values(
    values: dict[str, str], prefix: str, config: AgentConfig
) -> tuple[HealthCheck | None, list[str]]:
    """The check in ``values`` (or the config's), and the problems found in the published one.

    A bad ``interval`` or ``timeout`` falls back to the config's value rather than disabling the
    check: a typo in a number should not silence the health of a whole role.
    """
    base = f"{prefix.rstrip('/')}/{keyspace.HEALTH}/"
    cmd = values.get(base + "cmd", "")
    if not cmd.strip():
        if not config.health_cmd:
            return None, []
        return HealthCheck(config.health_cmd, config.health_interval, config.health_timeout), []
    problems: list[str] = []

    def number(name: str, default: float) -> float:
        raw = values.get(base + name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"{base}{name}: {raw!r} is not a number; using {default:g}")
            return default
        if not value > 0 or value == float("inf"):
            problems.append(f"{base}{name}: must be positive and finite, not {raw!r}; using {default:g}")
            return default
        return value

    interval = number("interval", config.health_interval)
    timeout = number("timeout", config.health_timeout)
    return HealthCheck(cmd, interval, timeout), problems


class HealthChecker:
    """Runs the current check every ``interval`` seconds and reports each verdict."""

    def __init__(self, reporter: Reporter, root: Path) -> None:
        self._reporter = reporter
        self._root = root
        self._check: HealthCheck | None = None
        self._changed = asyncio.Event()
        self._done = asyncio.Condition()
        self.checks = 0
        self._log = get_logger("pitrix.agent.health")

    @property
    def check(self) -> HealthCheck | None:
        return self._check

    def offer(self, check: HealthCheck | None, problems: list[str] | None = None) -> None:
        """Use ``check`` from now on; a different one starts its cycle at once. ``problems`` (of
        the published check) are logged when the check changes, not on every round."""
        if check != self._check:
            for problem in problems or []:
                self._log.error("health check metadata", problem=problem)
            self._log.info(
                "health check set",
                cmd=check.cmd if check else None,
                interval=check.interval if check else None,
            )
            self._check = check
            self._changed.set()

    async def wait_checks(self, count: int) -> None:
        """Until ``count`` checks have run and been reported (for embedding and tests)."""
        async with self._done:
            await self._done.wait_for(lambda: self.checks >= count)

    async def serve(self) -> None:
        while True:
            check = self._check
            self._changed.clear()
            if check is None:
                await self._changed.wait()
                continue
            await self._run(check)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(check.interval):
                    await self._changed.wait()

    async def _run(self, check: HealthCheck) -> None:
        result = await run_shell(check.cmd, root=self._root, timeout=check.timeout)
        error = None if result.ok else f"{result.describe()}: {result.output.strip()[-OUTPUT_TAIL:]}"
        try:
            await self._reporter.health(result.ok, error)
        except AgentError as exc:
            self._log.warning("health report failed", error=str(exc))
        async with self._done:
            self.checks += 1
            self._done.notify_all()
