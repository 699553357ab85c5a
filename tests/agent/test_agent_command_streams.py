"""Command results keep stdout and stderr apart (``stdout_tail``, ``stderr_tail``) beside the
merged ``output_tail``, in every profile: AppCenter services print JSON or node ids on stdout and
log on stderr, and the runtime parses the stdout alone."""

from __future__ import annotations

from pathlib import Path

from agent_helpers import RecordingReporter

from pitrix.agent.commands import Command, CommandLedger, CommandRunner
from pitrix.agent.shell import run_shell


async def test_run_shell_splits_on_request(tmp_path: Path) -> None:
    script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 4"
    split = await run_shell(script, root=tmp_path, timeout=30, split=True)
    assert split.exit_code == 4
    assert (split.stdout, split.stderr) == ("out1\nout2\n", "err1\nerr2\n")
    assert sorted(split.output.splitlines()) == ["err1", "err2", "out1", "out2"]
    merged = await run_shell(script, root=tmp_path, timeout=30)
    assert merged.output == "out1\nerr1\nout2\nerr2\n" and (merged.stdout, merged.stderr) == ("", "")
    # Each tail is bounded on its own.
    big = await run_shell(
        "head -c 9000 /dev/zero | tr '\\0' o; echo e >&2",
        root=tmp_path,
        timeout=30,
        split=True,
        tail_bytes=100,
    )
    assert big.stdout == "o" * 100 and big.stderr == "e\n" and len(big.output) == 100


async def test_command_records_carry_both_tails(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    runner = CommandRunner(CommandLedger(tmp_path / "state"), reporter, tmp_path)
    await runner.recover()
    await runner.run_once(Command("c/1", 'echo "warming up" >&2; echo \'{"labels":["a"],"data":[[1]]}\'', 30))
    executing, final = reporter.commands[0][1], reporter.commands[-1][1]
    assert executing["stdout_tail"] == executing["stderr_tail"] == ""
    assert final["status"] == "successful"
    assert final["stdout_tail"] == '{"labels":["a"],"data":[[1]]}\n'
    assert final["stderr_tail"] == "warming up\n"
    assert "warming up" in str(final["output_tail"]) and "labels" in str(final["output_tail"])
    await runner.run_once(Command("c/2", "echo partial; sleep 30", 0.3))
    timed_out = reporter.commands[-1][1]
    assert timed_out["stdout_tail"] == "partial\n" and "timeout" in str(timed_out["stderr_tail"])
