"""Commands run as VM processes: cwd = root, PITRIX_VM_ROOT set, the whole group killed on timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from agent_helpers import read_fifo_line, wait_gone

from pitrix.agent.shell import run_shell


async def test_runs_in_root_with_env(tmp_path: Path) -> None:
    result = await run_shell('pwd; echo "$PITRIX_VM_ROOT"; echo err >&2; exit 3', root=tmp_path, timeout=10)
    assert result.exit_code == 3 and not result.ok and not result.timed_out
    assert result.output.split() == [str(tmp_path), str(tmp_path), "err"]


async def test_the_command_sees_a_plain_sh_c(tmp_path: Path) -> None:
    """The shell reaches the root itself (posix_spawn has no working directory): the command
    still sees $0 = sh, no arguments, its errors on line 1, and stdin at EOF."""
    result = await run_shell(
        'echo "$0 $#"; read -r line || echo eof; no-such-command-here', root=tmp_path, timeout=10
    )
    lines = result.output.splitlines()
    assert lines[:2] == ["sh 0", "eof"] and result.exit_code == 127
    assert "no-such-command-here" in lines[2]
    assert lines[2].startswith(("sh: 1: ", "sh: line 1: "))  # dash, bash


async def test_a_missing_root_is_a_failed_command(tmp_path: Path) -> None:
    result = await run_shell("echo ran", root=tmp_path / "gone", timeout=10)
    assert result.exit_code == 126 and "ran" not in result.output and "gone" in result.output


async def test_exit_by_signal_is_negative(tmp_path: Path) -> None:
    result = await run_shell("kill -TERM $$", root=tmp_path, timeout=10)
    assert result.exit_code == -15 and not result.ok


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    result = await run_shell("sleep 60 & echo $! > child.pid; wait", root=tmp_path, timeout=0.5)
    assert result.timed_out and not result.ok
    pid = int((tmp_path / "child.pid").read_text())
    assert await wait_gone(pid)


async def test_output_tail_is_bounded(tmp_path: Path) -> None:
    result = await run_shell("seq 1 100000", root=tmp_path, timeout=10, tail_bytes=100)
    assert len(result.output) == 100 and result.output.endswith("100000\n")


async def test_cancel_kills_the_command(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    task = asyncio.create_task(run_shell("echo $$ > started; exec sleep 60", root=tmp_path, timeout=60))
    pid = int(await read_fifo_line(fifo))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await wait_gone(pid)


async def test_many_commands_at_once_keep_their_own_output_and_leak_no_descriptor(tmp_path: Path) -> None:
    """As in the simulator's light mode: hundreds of agents' commands in one process at once.

    Each child's pipe and pidfd belong to its own run alone; a descriptor closed twice would close
    a neighbour's (EBADF in an unrelated write), and one never closed would pile up.
    """
    before = len(os.listdir("/proc/self/fd"))

    def durable_writes(n: int) -> None:  # threads opening and closing files meanwhile
        for i in range(200):
            target = tmp_path / f"w{n}-{i}"
            target.write_bytes(b"x")
            target.unlink()

    writers = [asyncio.to_thread(durable_writes, n) for n in range(4)]
    results = await asyncio.gather(
        *(
            run_shell(f"echo out-{i}; echo err-{i} >&2; exit {i % 3}", root=tmp_path, timeout=60)
            for i in range(300)
        ),
        *writers,
    )
    for i, result in enumerate(results[:300]):
        assert result.exit_code == i % 3 and result.output == f"out-{i}\nerr-{i}\n", (i, result)
    # At most as many: descriptors an earlier test in this worker left closing may go meanwhile.
    assert len(os.listdir("/proc/self/fd")) <= before
