"""The role's health check: which command, how often, and the loop that runs it and reports.

The check comes from the metadata when the runtime published one (``<prefix>/health/{cmd,
interval,timeout,unhealthy_threshold,action_cmd,action_timeout}``, which metad projects from
``/clusters/<cid>/health/<role>/...``), so an app version's health check reaches its instances
without touching their images; the agent config's ``health_cmd`` is the fallback for images that
carry their own. Each round hands the current check to the checker, which restarts its cycle when
the check changed.

One failed check is not yet an unhealthy node: a service reloading, a slow disk, a check that
raced a restart all fail once. The node is reported unhealthy once ``unhealthy_threshold`` checks
in a row failed (or while it has not passed one since the agent started: it was never shown
healthy), and healthy again at its first pass. Every report carries the current streak
(``failures``) so a gate that wants "working now" can ask for a pass. When a streak reaches the
threshold the node's ``action_cmd`` runs once (bounded by its timeout); its result is logged and
sent with the next report, and again with every report of that streak.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import AgentError
from pitrix.agent.log import get_logger
from pitrix.agent.report import Reporter, utc_now
from pitrix.agent.shell import run_shell
from pitrix.metad import keyspace

OUTPUT_TAIL = 500
DEFAULT_ACTION_TIMEOUT = 60.0


@dataclass(frozen=True)
class HealthCheck:
    """The role's health check as metad serves it, read once per change of its values."""

    cmd: str
    interval: float
    timeout: float
    threshold: int = 1  # failures in a row before the node is reported unhealthy
    action_cmd: str = ""  # run once when a streak of failures reaches the threshold
    action_timeout: float = DEFAULT_ACTION_TIMEOUT


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
        return (
            HealthCheck(
                config.health_cmd,
                config.health_interval,
                config.health_timeout,
                config.health_unhealthy_threshold,
                config.health_action_cmd,
                config.health_action_timeout,
            ),
            [],
        )
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

    def count(name: str, default: int) -> int:
        raw = values.get(base + name, "").strip()
        if not raw:
            return default
        if not raw.isdigit() or int(raw) < 1:
            problems.append(
                f"{base}{name}: must be a whole number of at least 1, not {raw!r}; using {default}"
            )
            return default
        return int(raw)

    interval = number("interval", config.health_interval)
    timeout = number("timeout", config.health_timeout)
    threshold = count("unhealthy_threshold", config.health_unhealthy_threshold)
    action_timeout = number("action_timeout", config.health_action_timeout)
    action = values.get(base + "action_cmd", "").strip()
    return HealthCheck(cmd, interval, timeout, threshold, action, action_timeout), problems


class HealthChecker:
    """Runs the current check every ``interval`` seconds and reports each verdict."""

    def __init__(self, reporter: Reporter, root: Path) -> None:
        self._reporter = reporter
        self._root = root
        self._check: HealthCheck | None = None
        self._changed = asyncio.Event()
        self._done = asyncio.Condition()
        self.checks = 0
        self.failures = 0  # checks failed in a row
        self.passed = False  # whether a check passed since the agent started
        self.actions = 0  # action_cmd runs (for embedding and tests)
        self._action: dict[str, Any] | None = None  # the streak's action result, reported with it
        self._log = get_logger("pitrix.agent.health")

    @property
    def healthy(self) -> bool:
        """The node's verdict: it passed once, and fewer checks than the threshold failed since."""
        threshold = self._check.threshold if self._check else 1
        return self.passed and self.failures < threshold

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
            self.failures = 0  # a new check starts its own streak
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
        if result.ok:
            self.failures, self.passed, self._action = 0, True, None
        else:
            self.failures += 1
        await self._report(error)
        if not result.ok and self.failures == check.threshold and check.action_cmd:
            await self._act(check)
            await self._report(error)
        async with self._done:
            self.checks += 1
            self._done.notify_all()

    async def _report(self, error: str | None) -> None:
        details: dict[str, Any] = {"failures": self.failures}
        if self._action is not None:
            details["action"] = self._action
        try:
            await self._reporter.health(self.healthy, error, details)
        except AgentError as exc:
            self._log.warning("health report failed", error=str(exc))

    async def _act(self, check: HealthCheck) -> None:
        """The node just turned unhealthy: its ``action_cmd``, once for this streak."""
        self._log.warning("unhealthy; running action_cmd", failures=self.failures, cmd=check.action_cmd)
        result = await run_shell(check.action_cmd, root=self._root, timeout=check.action_timeout)
        self._action = {
            "status": "successful" if result.ok else "failed",
            "exit_code": result.exit_code,
            "output_tail": result.output.strip()[-OUTPUT_TAIL:],
            "time": utc_now(),
        }
        self.actions += 1
        log = self._log.info if result.ok else self._log.error
        log("action_cmd done", result=result.describe(), output=self._action["output_tail"])
