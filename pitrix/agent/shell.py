"""Running a VM's shell commands (check_cmd, reload_cmd, lifecycle commands).

Every command runs as a VM process would: ``sh -c`` with the VM root as working directory and
``PITRIX_VM_ROOT`` set, in its own process group so a timeout kills the whole tree it started
(daemons that forked included), not only the shell.

The child is started by ``os.posix_spawn`` (glibc starts it with vfork) and awaited through a
pidfd, not by the event loop's own spawn: uvloop forks, and a fork copies the parent's page
tables, 20 ms per command from a 300 MB parent (the simulator hosting a thousand light agents)
against under 1 ms for vfork, whatever the parent's size. Not ``subprocess.Popen`` either, which
vforks too but spends twice the parent's CPU in Python around it (an agent starts a reload on
every change, on cores it shares). posix_spawn has no working directory of its own: the shell
changes to the VM root first, on the command's own line, so its errors keep their line numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pitrix.sdnotify import child_environ

if TYPE_CHECKING:
    import asyncio

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
    """The environment a VM command sees: the agent's own (less what systemd meant for the agent
    alone: a service restarted by a reload command must not notify as the agent) plus the VM root."""
    env = child_environ()
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
    import asyncio  # here, not at the top: a one-shot render with no commands never loads it

    child = _Child(command, root, env if env is not None else command_env(root), tail_bytes)
    # A timer that kills the command's group, rather than asyncio.wait_for: wait_for wraps the
    # wait in a task of its own, work paid by every reload of every change.
    expiry = asyncio.get_running_loop().call_later(timeout, child.expire)
    try:
        try:
            await child.exited()
        except asyncio.CancelledError:
            kill_group(child.pid)
            with contextlib.suppress(Exception):
                await child.exited()
            raise
        finally:
            expiry.cancel()
        # A daemon started by the command may keep the pipe open after the shell exited: give
        # the output a moment to end, then keep what arrived.
        if not child.output_done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.output_ended(), 1.0)
    finally:
        child.close()
    code = child.returncode if child.returncode is not None else -1
    output = child.tail.decode("utf-8", "replace")
    return ShellResult(exit_code=code, output=output, timed_out=child.timed_out)


# $1 is the VM root (``sh -c SCRIPT sh ROOT``); shifted away, the command sees no arguments, as
# under a plain ``sh -c``. 126: what a shell answers for a command it cannot run.
_IN_ROOT = 'cd -- "$1" || exit 126; shift; '


class _Child:
    """``sh -c command`` in its own session: started by vfork, its exit awaited on a pidfd, its
    merged output read from a pipe. Both descriptors belong to this object alone and are closed
    once, by ``close``: a descriptor closed twice in a process that runs a thousand agents closes
    someone else's."""

    def __init__(self, command: str, root: Path, env: dict[str, str], tail_bytes: int) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self._loop = loop
        read_end, write_end = os.pipe()  # both close-on-exec: the child keeps only its 1 and 2
        try:
            # vfork: well under a millisecond whatever the parent's size, so it runs on the loop
            # rather than paying a thread hop.
            self.pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", _IN_ROOT + command, "sh", str(root)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, 1),
                    (os.POSIX_SPAWN_DUP2, write_end, 2),
                ],
                setsid=True,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child holds its copy; ours would keep the pipe from ending
        self.returncode: int | None = None
        self.timed_out = False
        self.tail = bytearray()
        self._tail_bytes = tail_bytes
        self._output_fd: int | None = read_end
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._exited: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        os.set_blocking(read_end, False)
        loop.add_reader(read_end, self._on_output)
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_output(self) -> None:
        assert self._output_fd is not None
        try:
            chunk = os.read(self._output_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            self._stop_reading()
            return
        self.tail.extend(chunk)
        if len(self.tail) > self._tail_bytes:
            del self.tail[: len(self.tail) - self._tail_bytes]

    def _stop_reading(self) -> None:
        if self._output_fd is not None:
            self._loop.remove_reader(self._output_fd)
            os.close(self._output_fd)
            self._output_fd = None
        if not self._ended.done():
            self._ended.set_result(None)

    def _stop_watching(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _on_exit(self) -> None:
        self._stop_watching()
        # The pidfd turned readable: it has exited, so this reaps it at once.
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(None)

    def expire(self) -> None:
        """Out of time: kill the whole group (its exit is then awaited as any other)."""
        if not self._exited.done():
            self.timed_out = True
            kill_group(self.pid)

    @property
    def output_done(self) -> bool:
        return self._ended.done()

    async def exited(self) -> None:
        import asyncio

        await asyncio.shield(self._exited)

    async def output_ended(self) -> None:
        import asyncio

        await asyncio.shield(self._ended)

    def close(self) -> None:
        """Stop reading its output (what arrived is kept) and stop watching it, once."""
        self._stop_reading()
        self._stop_watching()


def kill_group(pgid: int) -> None:
    """SIGKILL the process group led by ``pgid``; gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
