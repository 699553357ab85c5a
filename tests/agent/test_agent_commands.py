"""Lifecycle commands: exactly once per id (across restarts and a SIGKILL), timeouts, reports."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path

from agent_helpers import AgentProcess, RecordingReporter, read_fifo_line, wait_gone

from pitrix.agent.commands import Command, CommandLedger, CommandRunner, command_from_values, loggable


def runner(root: Path, reporter: RecordingReporter) -> CommandRunner:
    return CommandRunner(CommandLedger(root / "state"), reporter, root)


def test_command_from_values() -> None:
    values = {"/self/cmd/id": "c1", "/self/cmd/cmd": "echo hi", "/self/cmd/timeout": "12"}
    assert command_from_values(values, "/self", 600) == Command("c1", "echo hi", 12.0)
    values["/self/cmd/timeout"] = "soon"
    assert command_from_values(values, "/self", 600) == Command("c1", "echo hi", 600.0)
    assert command_from_values({"/self/cmd/id": "c1"}, "/self", 600) is None
    assert command_from_values({}, "", 600) is None


async def test_runs_once_and_reports(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    first = runner(tmp_path, reporter)
    await first.recover()
    command = Command("c/1", "echo ran >> ran.log; echo out; exit 0", 30)
    assert await first.run_once(command) is True
    assert await first.run_once(command) is False
    # A new runner (an agent restart) on the same state dir does not run it again either.
    second = runner(tmp_path, reporter)
    await second.recover()
    assert await second.run_once(command) is False
    assert (tmp_path / "ran.log").read_text() == "ran\n"
    statuses = [(cid, r["status"]) for cid, r in reporter.commands]
    assert statuses == [("c/1", "executing"), ("c/1", "successful")]
    final = reporter.commands[-1][1]
    assert final["exit_code"] == 0 and final["output_tail"] == "out\n"
    assert final["started"] and final["finished"]


async def test_failure_and_timeout(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    r = runner(tmp_path, reporter)
    await r.recover()
    await r.run_once(Command("bad", "echo nope; exit 3", 30))
    assert reporter.commands[-1][1]["status"] == "failed" and reporter.commands[-1][1]["exit_code"] == 3
    await r.run_once(Command("slow", "sleep 60 & echo $! > bg.pid; wait", 0.3))
    record = reporter.commands[-1][1]
    assert record["status"] == "failed" and record["exit_code"] is None
    assert "timeout" in str(record["output_tail"])
    assert await wait_gone(int((tmp_path / "bg.pid").read_text()))


async def test_result_kept_until_reported(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    reporter.fail_commands = 2  # "executing" and the first result report are lost
    r = runner(tmp_path, reporter)
    await r.recover()
    await r.run_once(Command("c2", "true", 30))
    assert reporter.commands == []
    await r.flush_reports()
    assert [(c, rec["status"]) for c, rec in reporter.commands] == [("c2", "successful")]
    await r.flush_reports()  # acknowledged: not sent twice
    assert len(reporter.commands) == 1


class CountingLedger(CommandLedger):
    scans = 0

    def unreported(self) -> list[tuple[str, dict[str, object]]]:
        self.scans += 1
        return super().unreported()


async def test_heartbeat_flush_reads_the_ledger_only_when_a_report_is_owed(tmp_path: Path) -> None:
    """The heartbeat flushes at every beat; reading every record ever kept each time was a
    quarter of a light VM's heartbeat cost."""
    reporter = RecordingReporter()
    ledger = CountingLedger(tmp_path / "state")
    r = CommandRunner(ledger, reporter, tmp_path)
    await r.recover()  # at start a report may be owed from the last run: one look
    await r.run_once(Command("c1", "true", 30))  # reported at once
    looked = ledger.scans
    for _beat in range(5):
        await r.flush_reports()
    assert ledger.scans == looked
    reporter.fail_commands = 2  # the next command's reports are lost: owed until a beat sends it
    await r.run_once(Command("c2", "true", 30))
    await r.flush_reports()
    assert [(c, rec["status"]) for c, rec in reporter.commands][-1] == ("c2", "successful")
    looked = ledger.scans
    await r.flush_reports()
    assert ledger.scans == looked


async def test_latest_offer_runs_in_background(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    r = runner(tmp_path, reporter)
    await r.recover()
    worker = asyncio.create_task(r.serve())
    try:
        r.offer(Command("a", "echo a >> order.log", 30))
        await asyncio.wait_for(r.wait_idle(), 10)
        r.offer(Command("a", "echo again >> order.log", 30))
        r.offer(None)
        await asyncio.wait_for(r.wait_idle(), 10)
        r.offer(Command("b", "echo b >> order.log", 30))
        await asyncio.wait_for(r.wait_idle(), 10)
    finally:
        worker.cancel()
    assert (tmp_path / "order.log").read_text() == "a\nb\n"


async def test_interrupted_by_sigkill_is_reported_failed_not_rerun(vm_root: Path) -> None:
    """The real agent is SIGKILLed mid-command; after a restart the command is failed, not rerun."""
    data = vm_root / "data.yaml"
    os.mkfifo(vm_root / "started.fifo")
    data.write_text(
        "cmd:\n  id: cmd-1\n  timeout: 600\n"
        "  cmd: 'echo run >> ran.log; echo $$ > started.fifo; exec sleep 600'\n"
    )
    args = ("-watch", "-backend", "file", "-file", str(data), "-log-level", "debug")
    agent = await AgentProcess.start(vm_root, *args)
    try:
        await agent.ready()
        pid = int(await read_fifo_line(vm_root / "started.fifo"))
    finally:
        await agent.kill()
    os.kill(pid, 9)  # the orphaned command (its own session) is the VM's business, not the test's
    ledger = vm_root / "var/lib/pitrix-agent/commands"
    assert (ledger / "cmd-1.running").exists()

    agent = await AgentProcess.start(vm_root, *args)
    try:
        await agent.ready()
        await agent.wait_log("command already run", cmd_id="cmd-1")
        record = json.loads((ledger / "cmd-1.json").read_text())
        assert record["record"]["status"] == "failed"
        assert "interrupted" in record["record"]["output_tail"]
        assert record["reported"] is True  # the log reporter acknowledged it
        assert not (ledger / "cmd-1.running").exists()
        # A new command id runs, once.
        data.write_text("cmd:\n  id: cmd-2\n  cmd: 'echo two >> ran.log'\n")
        await agent.wait_log("command finished", cmd_id="cmd-2")
    finally:
        assert await agent.terminate() == 0, agent.tail
    assert (vm_root / "ran.log").read_text() == "run\ntwo\n"

    agent = await AgentProcess.start(vm_root, *args)
    try:
        await agent.ready()
        await agent.wait_log("command already run", cmd_id="cmd-2")
    finally:
        assert await agent.terminate() == 0, agent.tail
    assert (vm_root / "ran.log").read_text() == "run\ntwo\n"


async def test_sigterm_stops_the_running_command_and_restart_reports_it(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    os.mkfifo(vm_root / "started.fifo")
    data.write_text("cmd:\n  id: long-1\n  cmd: 'echo $$ > started.fifo; exec sleep 600'\n")
    args = ("-watch", "-backend", "file", "-file", str(data))
    agent = await AgentProcess.start(vm_root, *args)
    try:
        await agent.ready()
        pid = int(await read_fifo_line(vm_root / "started.fifo"))
    finally:
        rc = await agent.terminate()
    assert rc == 0, agent.tail
    assert await wait_gone(pid)  # the agent killed the command's process group on its way out
    agent = await AgentProcess.start(vm_root, *args)
    try:
        await agent.ready()
        entry = await agent.wait_log("command status", cmd_id="long-1")
        assert entry["status"] == "failed" and "interrupted" in str(entry["output_tail"])
    finally:
        assert await agent.terminate() == 0, agent.tail


async def test_unwritable_ledger_does_not_run_the_command_or_stop_the_runner(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    r = runner(tmp_path, reporter)
    await r.recover()
    ledger_dir = tmp_path / "state/commands"
    ledger_dir.rmdir()
    ledger_dir.write_text("not a directory\n")  # every ledger write now fails
    worker = asyncio.create_task(r.serve())
    try:
        r.offer(Command("x1", "echo ran >> ran.log", 30))
        await asyncio.wait_for(r.wait_idle(), 10)
        assert not (tmp_path / "ran.log").exists() and reporter.commands == []
        ledger_dir.unlink()
        ledger_dir.mkdir()
        r.offer(Command("x1", "echo ran >> ran.log", 30))
        await asyncio.wait_for(r.wait_idle(), 10)
        assert (tmp_path / "ran.log").read_text() == "ran\n"
    finally:
        worker.cancel()


def test_the_log_shows_a_commands_parameter_names_never_their_values() -> None:
    secret = "it's $ecret"
    cmd = f"export KEY={shlex.quote(secret)} LEVEL=3\nopt/app/bin/backup"
    shown = loggable(cmd)
    assert shown == "export KEY=… LEVEL=…\nopt/app/bin/backup" and "ecret" not in shown
    assert loggable("opt/app/bin/start") == "opt/app/bin/start"
    assert loggable("export KEY='unclosed\nrun") == "export <unparsed>=…\nrun"
