"""Running a VM's shell commands (check_cmd, reload_cmd, lifecycle commands).

Every command runs as a VM process would: ``sh -c`` with the VM root as working directory and
``PITRIX_VM_ROOT`` set, in its own process group so a timeout kills the whole tree it started
(daemons that forked included), not only the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

OUTPUT_TAIL_BYTES = 4096


@dataclass(frozen=True)
class ShellResult:
    """What a finished (or killed) command left behind."""

    exit_code: int
    output: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """A one-line reason suitable for an error field."""
        if self.timed_out:
            return "timed out"
        return f"exit status {self.exit_code}"


def command_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a VM command sees: the agent's own plus the VM root."""
    env = dict(os.environ)
    env["PITRIX_VM_ROOT"] = str(root)
    if extra:
        env.update(extra)
    return env


async def run_shell(
    command: str,
    *,
    root: Path,
    timeout: float,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
    env: dict[str, str] | None = None,
) -> ShellResult:
    """Run ``command`` under ``sh -c``; stdout and stderr are merged and only the tail kept.

    The tail is kept rather than the whole output because lifecycle commands can be chatty and
    the result travels back through metad as a single value.
    """
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        cwd=str(root),
        env=env if env is not None else command_env(root),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    tail = bytearray()

    async def drain() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            if len(tail) > tail_bytes:
                del tail[: len(tail) - tail_bytes]

    reader = asyncio.ensure_future(drain())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        kill_group(proc.pid)
        await proc.wait()
    except asyncio.CancelledError:
        kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        reader.cancel()
        raise
    # A daemon started by the command may keep the pipe open after the shell exited: give the
    # reader a moment for what is already buffered, then stop reading.
    try:
        await asyncio.wait_for(asyncio.shield(reader), 1.0)
    except TimeoutError:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    code = proc.returncode if proc.returncode is not None else -1
    return ShellResult(exit_code=code, output=tail.decode("utf-8", "replace"), timed_out=timed_out)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group led by ``pgid``; gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
