"""Lifecycle commands from ``/self/cmd``: each command id runs exactly once, ever.

The ledger under the state dir is what makes "once" survive restarts: a command is marked
running (durably) before it starts and done (durably) before its result is reported. A restart
that finds a running marker without a done record knows the command was interrupted mid-run: it
reports it failed rather than running it again, since half of an ``init`` run twice is worse than
a failure the runtime can see and retry under a new id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pitrix.agent.durable import write_durably
from pitrix.agent.errors import AgentError, RejectedError
from pitrix.agent.log import get_logger
from pitrix.agent.report import Reporter, utc_now
from pitrix.agent.shell import run_shell
from pitrix.metad import keyspace


@dataclass(frozen=True)
class Command:
    """The command an instance must run now."""

    id: str
    cmd: str
    timeout: float


def loggable(cmd: str) -> str:
    """``cmd`` as the log may show it: the values of a leading ``export`` line (a service's
    parameters, passwords among them) left out, their names kept."""
    first, newline, rest = cmd.partition("\n")
    if not first.startswith("export "):
        return cmd
    try:
        names = [word.split("=", 1)[0] for word in shlex.split(first)[1:]]
    except ValueError:
        names = ["<unparsed>"]
    return f"export {' '.join(n + '=…' for n in names)}{newline}{rest}"


def command_from_values(values: dict[str, str], prefix: str, default_timeout: float) -> Command | None:
    """The ``<prefix>/cmd/{id,cmd,timeout}`` command in ``values``, or None when there is none."""
    base = f"{prefix.rstrip('/')}/{keyspace.CMD}/"
    cmd_id = values.get(base + "id", "").strip()
    cmd = values.get(base + "cmd", "")
    if not cmd_id or not cmd.strip():
        return None
    raw = values.get(base + "timeout", "").strip()
    try:
        timeout = float(raw) if raw else default_timeout
    except ValueError:
        timeout = default_timeout
    if timeout <= 0:
        timeout = default_timeout
    return Command(cmd_id, cmd, timeout)


class CommandLedger:
    """Durable per-id state under ``<state_dir>/commands``: ``<id>.running`` and ``<id>.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "commands"

    def _path(self, cmd_id: str, suffix: str) -> Path:
        return self.directory / (quote(cmd_id, safe="") + suffix)

    def ensure(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AgentError(f"state_dir {self.directory}: {exc.strerror}") from None

    def is_known(self, cmd_id: str) -> bool:
        return self._path(cmd_id, ".json").exists() or self._path(cmd_id, ".running").exists()

    def mark_running(self, cmd_id: str, started: str) -> None:
        write_durably(self._path(cmd_id, ".running"), json.dumps({"id": cmd_id, "started": started}).encode())

    def mark_done(self, cmd_id: str, record: dict[str, Any], reported: bool = False) -> None:
        body = {"id": cmd_id, "reported": reported, "record": record}
        write_durably(self._path(cmd_id, ".json"), json.dumps(body).encode())
        self._path(cmd_id, ".running").unlink(missing_ok=True)

    def interrupted(self) -> list[tuple[str, str]]:
        """(id, started) of commands marked running that never finished."""
        out = []
        for path in sorted(self.directory.glob("*.running")):
            try:
                data = json.loads(path.read_text())
                out.append((str(data["id"]), str(data.get("started", ""))))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def unreported(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not data.get("reported"):
                out.append((str(data["id"]), dict(data["record"])))
        return out


class CommandRunner:
    """Runs offered commands one at a time in the background, each id at most once."""

    def __init__(self, ledger: CommandLedger, reporter: Reporter, root: Path, tail_bytes: int = 4096) -> None:
        self._ledger = ledger
        self._reporter = reporter
        self._root = root
        self._tail_bytes = tail_bytes
        self._offered: Command | None = None
        self._wakeup = asyncio.Event()
        self._running = False
        self._state = asyncio.Condition()
        # Reports are flushed from the worker and from the heartbeat: one flush at a time, so a
        # result is neither sent nor acknowledged twice.
        self._flushing = asyncio.Lock()
        # Whether the ledger may hold a result not acknowledged yet. Finding out reads every
        # record the agent ever kept, and the heartbeat asks at every beat: it looks only when
        # one may be owed (at start, after a command ends, after a report failed).
        self._owed = True
        self._log = get_logger("pitrix.agent.commands")

    async def recover(self) -> None:
        """After a (re)start: fail what was interrupted, then re-send unsent reports."""
        await asyncio.to_thread(self._ledger.ensure)
        for cmd_id, started in await asyncio.to_thread(self._ledger.interrupted):
            record = {
                "status": "failed",
                "exit_code": None,
                "started": started,
                "finished": utc_now(),
                "output_tail": "interrupted: the agent stopped while the command was running",
                "stdout_tail": "",
                "stderr_tail": "",
            }
            self._log.warning("command interrupted by an agent restart", cmd_id=cmd_id)
            await asyncio.to_thread(self._ledger.mark_done, cmd_id, record)
        await self.flush_reports()

    async def flush_reports(self) -> None:
        """Send every finished command's result that has not been acknowledged yet."""
        async with self._flushing:
            if not self._owed:
                return
            self._owed = False
            try:
                await self._flush()
            except BaseException:
                self._owed = True
                raise

    async def _flush(self) -> None:
        """One pass over the ledger: send each unacknowledged result, mark it acknowledged."""
        for cmd_id, record in await asyncio.to_thread(self._ledger.unreported):
            try:
                await self._reporter.command(cmd_id, record)
            except RejectedError as exc:
                # Refused outright (say, an id metad does not accept): resending never helps,
                # and holding it back would hold back every later report too.
                self._log.error("command report rejected; dropped", cmd_id=cmd_id, error=str(exc))
            except AgentError as exc:
                self._log.warning("command report failed; will retry", cmd_id=cmd_id, error=str(exc))
                self._owed = True
                return
            else:
                self._log.info("command reported", cmd_id=cmd_id, status=record.get("status"))
            await asyncio.to_thread(self._ledger.mark_done, cmd_id, record, True)

    def offer(self, command: Command | None) -> None:
        """The command metadata shows now; it runs unless its id ran (or is running) already."""
        if command is None:
            return
        self._offered = command
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until every offered command has finished (for -onetime and tests)."""
        async with self._state:
            await self._state.wait_for(lambda: self._offered is None and not self._running)

    async def serve(self) -> None:
        """The worker loop: run the latest offered command whenever one is offered."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            command, self._offered = self._offered, None
            if command is None:
                continue
            self._running = True
            try:
                await self.run_once(command)
            except OSError as exc:
                # The ledger cannot be written (disk full, state dir gone). Before the running
                # marker this command did not start and is tried again when next offered; after
                # it, the marker makes a restart report it failed. Either way: never run blind.
                self._log.error("command ledger unavailable", cmd_id=command.id, error=str(exc))
            finally:
                self._running = False
                async with self._state:
                    self._state.notify_all()

    async def run_once(self, command: Command) -> bool:
        """Run ``command`` unless its id is known; report executing, then the result."""
        if await asyncio.to_thread(self._ledger.is_known, command.id):
            self._log.debug("command already run", cmd_id=command.id)
            return False
        log = self._log.bind(cmd_id=command.id)
        started = utc_now()
        await asyncio.to_thread(self._ledger.mark_running, command.id, started)
        log.info("command started", cmd=loggable(command.cmd), timeout=command.timeout)
        with contextlib.suppress(AgentError):
            await self._reporter.command(
                command.id,
                {
                    "status": "executing",
                    "exit_code": None,
                    "started": started,
                    "finished": None,
                    "output_tail": "",
                    "stdout_tail": "",
                    "stderr_tail": "",
                },
            )
        result = await run_shell(
            command.cmd, root=self._root, timeout=command.timeout, tail_bytes=self._tail_bytes, split=True
        )
        output, errors = result.output, result.stderr
        if result.timed_out:
            note = f"\n[pitrix-agent: killed after {command.timeout:g}s timeout]"
            output += note
            errors += note
        record = {
            "status": "successful" if result.ok else "failed",
            "exit_code": None if result.timed_out else result.exit_code,
            "started": started,
            "finished": utc_now(),
            "output_tail": output[-self._tail_bytes :],
            # Apart, for services whose stdout is parsed (JSON, node ids) while they log on stderr.
            "stdout_tail": result.stdout[-self._tail_bytes :],
            "stderr_tail": errors[-self._tail_bytes :],
        }
        await asyncio.to_thread(self._ledger.mark_done, command.id, record)
        log.info("command finished", status=record["status"], exit_code=record["exit_code"])
        self._owed = True
        await self.flush_reports()
        return True
