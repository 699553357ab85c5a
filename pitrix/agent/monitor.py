"""The role's monitor: a command whose output is numbers by name, run every interval and reported.

The definition comes from the metadata (``<prefix>/monitor/{cmd,interval,timeout,items/<name>/...}``,
which metad projects from ``/clusters/<cid>/monitor/<role>/...``), as the health check does, so an
app version's monitor reaches its nodes without touching their images.

The output is one of two shapes, chosen by its first character: a JSON object of name → number
(AppCenter's monitor output), or lines of ``name value`` (blank lines and ``#`` comments skipped,
so lines picked out of a Prometheus exposition fit as they are). Only the items the role declares
are reported: one the output lacks is just absent from the report, one the role does not declare
is ignored, and a value that is not a finite number is skipped. Each of these is logged once per
item and definition, not at every run: a monitor runs every few seconds for the node's lifetime.
A run that fails or times out reports no values and its reason, so pitrixd shows the node's items
as absent rather than their last values as current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pitrix.agent.errors import AgentError
from pitrix.agent.log import get_logger
from pitrix.agent.report import Reporter
from pitrix.agent.shell import run_shell
from pitrix.metad import keyspace

# What a run's output may be: enough for dozens of items with long names; a longer output is cut at
# its head, which spoils a JSON object (reported as unreadable) and drops the first lines.
OUTPUT_MAX = 64 * 1024
ERROR_TAIL = 300


@dataclass(frozen=True)
class MonitorSpec:
    """The role's monitor as metad serves it, read once per change of its values."""

    cmd: str
    interval: float
    timeout: float
    items: frozenset[str]


def monitor_from_values(values: dict[str, str], prefix: str) -> tuple[MonitorSpec | None, list[str]]:
    """The role's monitor in ``values`` (None when it has none), and the problems found in it.

    A bad ``interval`` or ``timeout`` falls back to a default rather than disabling the monitor.
    """
    base = f"{prefix.rstrip('/')}/{keyspace.MONITOR}/"
    cmd = values.get(base + "cmd", "")
    if not cmd.strip():
        return None, []
    problems: list[str] = []

    def number(name: str, default: float) -> float:
        raw = values.get(base + name, "").strip()
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"{base}{name}: {raw!r} is not a number; using {default:g}")
            return default
        if not math.isfinite(value) or value <= 0:
            problems.append(f"{base}{name}: must be positive and finite, not {raw!r}; using {default:g}")
            return default
        return value

    items_prefix = base + "items/"
    items = frozenset(
        key[len(items_prefix) :].split("/", 1)[0] for key in values if key.startswith(items_prefix)
    )
    return MonitorSpec(cmd, number("interval", 30.0), number("timeout", 10.0), items), problems


def parse_output(text: str) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Numbers by name from a monitor's output, and the problems as ``(what, message)`` pairs
    (``what`` names the item or line, so each is logged once)."""
    text = text.strip()
    problems: list[tuple[str, str]] = []
    values: dict[str, float] = {}
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            return {}, [("output", f"the output starts as JSON but is not: {exc}")]
        if not isinstance(doc, dict):
            return {}, [("output", "the output is JSON but not an object of name → number")]
        pairs = [(str(k), v) for k, v in doc.items()]
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                problems.append((f"line:{line[:40]}", f"line {number}: {line[:80]!r} is not 'name value'"))
                continue
            pairs.append((fields[0], fields[1]))
    for name, raw in pairs:
        value = _number(raw)
        if value is None:
            problems.append((name, f"{name}: {str(raw)[:40]!r} is not a number; skipped"))
            continue
        values[name] = value
    return values, problems


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


class MonitorRunner:
    """Runs the current monitor every ``interval`` seconds and reports the declared items."""

    def __init__(self, reporter: Reporter, root: Path) -> None:
        self._reporter = reporter
        self._root = root
        self._spec: MonitorSpec | None = None
        self._changed = asyncio.Event()
        self._done = asyncio.Condition()
        self._logged: set[str] = set()  # problems logged for the current definition
        self.runs = 0
        self.last: dict[str, float] = {}  # the values of the last run (for embedding and tests)
        self._log = get_logger("pitrix.agent.monitor")

    @property
    def spec(self) -> MonitorSpec | None:
        return self._spec

    def offer(self, spec: MonitorSpec | None, problems: list[str] | None = None) -> None:
        """Use ``spec`` from now on; a different one runs at once."""
        if spec != self._spec:
            for problem in problems or []:
                self._log.error("monitor metadata", problem=problem)
            self._log.info(
                "monitor set", cmd=spec.cmd if spec else None, items=sorted(spec.items) if spec else None
            )
            self._spec = spec
            self._logged.clear()
            self._changed.set()

    async def wait_runs(self, count: int) -> None:
        """Until ``count`` runs have been made and reported (for embedding and tests)."""
        async with self._done:
            await self._done.wait_for(lambda: self.runs >= count)

    async def serve(self) -> None:
        while True:
            spec = self._spec
            self._changed.clear()
            if spec is None:
                await self._changed.wait()
                continue
            await self._run(spec)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(spec.interval):
                    await self._changed.wait()

    async def _run(self, spec: MonitorSpec) -> None:
        result = await run_shell(spec.cmd, root=self._root, timeout=spec.timeout, tail_bytes=OUTPUT_MAX)
        values: dict[str, float] = {}
        error: str | None = None
        if not result.ok:
            error = f"{result.describe()}: {result.output.strip()[-ERROR_TAIL:]}"
            self._once("failed", "monitor command failed; no values reported", error=error)
        else:
            parsed, problems = parse_output(result.output)
            for what, message in problems:
                self._once(f"bad:{what}", "monitor output skipped", problem=message)
            for name, value in parsed.items():
                if name in spec.items:
                    values[name] = value
                else:
                    self._once(f"undeclared:{name}", "monitor item not declared; ignored", item=name)
            if problems and not parsed:  # nothing readable: say why beside the empty report
                error = problems[0][1]
        if result.ok:
            self._logged.discard("failed")  # a later failure is news again
        self.last = values
        try:
            await self._reporter.monitor(values, error)
        except AgentError as exc:
            self._log.warning("monitor report failed", error=str(exc))
        async with self._done:
            self.runs += 1
            self._done.notify_all()

    def _once(self, key: str, event: str, **fields: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            self._log.warning(event, **fields)
