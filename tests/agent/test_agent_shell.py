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
