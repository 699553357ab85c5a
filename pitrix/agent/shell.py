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
from pathlib import Path
from typing import TYPE_CHECKING

from pitrix.sdnotify import child_environ

if TYPE_CHECKING:
    import asyncio

OUTPUT_TAIL_BYTES = 4096


class ShellResult:
    """What a finished (or killed) command left behind.

    A plain slotted class, not a dataclass: those compile their generated methods at import, paid
    by every agent start."""

    __slots__ = ("exit_code", "output", "stderr", "stdout", "timed_out")

    def __init__(
        self, exit_code: int, output: str, timed_out: bool, stdout: str = "", stderr: str = ""
    ) -> None:
        self.exit_code = exit_code
        self.output = output
        self.timed_out = timed_out
        # Only with ``run_shell(split=True)``: each stream's own tail (``output`` stays the merged one).
        self.stdout = stdout
        self.stderr = stderr

    def _fields(self) -> tuple[int, str, bool, str, str]:
        return (self.exit_code, self.output, self.timed_out, self.stdout, self.stderr)

    def __eq__(self, other: object) -> bool:
        if type(other) is not ShellResult:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ShellResult(exit_code={self.exit_code!r}, output={self.output!r}, timed_out={self.timed_out!r},"
            f" stdout={self.stdout!r}, stderr={self.stderr!r})"
        )

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
    split: bool = False,
) -> ShellResult:
    """Run ``command`` under ``sh -c``; stdout and stderr are merged and only the tail kept.

    The tail is kept rather than the whole output because lifecycle commands can be chatty and
    the result travels back through metad as a single value. ``split``: stdout and stderr get
    pipes of their own, so their tails are kept apart as well (a service whose stdout is parsed,
    JSON or node ids, must not see its warnings); the merged tail then follows the order in which
    the agent read the two pipes. Off by default: reloads, checks and health probes only need the
    merged tail, and a second pipe is a second descriptor to watch on every change.
    """
    import asyncio  # here, not at the top: a one-shot render with no commands never loads it

    child = _Child(command, root, env if env is not None else command_env(root), tail_bytes, split)
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
    return ShellResult(
        exit_code=code,
        output=output,
        timed_out=child.timed_out,
        stdout=child.stream_tails[0].decode("utf-8", "replace"),
        stderr=child.stream_tails[1].decode("utf-8", "replace"),
    )


# $1 is the VM root (``sh -c SCRIPT sh ROOT``); shifted away, the command sees no arguments, as
# under a plain ``sh -c``. 126: what a shell answers for a command it cannot run.
_IN_ROOT = 'cd -- "$1" || exit 126; shift; '


class _Child:
    """``sh -c command`` in its own session: started by vfork, its exit awaited on a pidfd, its
    output read from one pipe (or one per stream). The descriptors belong to this object alone and
    are closed once, by ``close``: a descriptor closed twice in a process that runs a thousand agents closes
    someone else's."""

    def __init__(
        self, command: str, root: Path, env: dict[str, str], tail_bytes: int, split: bool = False
    ) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self._loop = loop
        # Pipes are close-on-exec: the child keeps only its 1 and 2. One pipe for both streams,
        # or (split) one each.
        pipes = [os.pipe()]
        try:
            if split:
                pipes.append(os.pipe())
            err_end = pipes[-1][1]
            # vfork: well under a millisecond whatever the parent's size, so it runs on the loop
            # rather than paying a thread hop.
            self.pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", _IN_ROOT + command, "sh", str(root)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, pipes[0][1], 1),
                    (os.POSIX_SPAWN_DUP2, err_end, 2),
                ],
                setsid=True,
            )
        except BaseException:
            for read_end, _ in pipes:
                os.close(read_end)
            raise
        finally:
            for _, write_end in pipes:  # the child holds its copy; ours would keep the pipe open
                os.close(write_end)
        self.returncode: int | None = None
        self.timed_out = False
        self.tail = bytearray()
        # Each stream's own tail when split (stdout, stderr); both stay empty otherwise.
        self.stream_tails = (bytearray(), bytearray())
        self._split = split
        self._tail_bytes = tail_bytes
        self._output_fds: list[int] = []
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._exited: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        for stream, (read_end, _) in enumerate(pipes):
            os.set_blocking(read_end, False)
            self._output_fds.append(read_end)
            loop.add_reader(read_end, self._on_output, read_end, stream)
        loop.add_reader(self._pidfd, self._on_exit)

    def _keep(self, buf: bytearray, chunk: bytes) -> None:
        buf.extend(chunk)
        if len(buf) > self._tail_bytes:
            del buf[: len(buf) - self._tail_bytes]

    def _on_output(self, fd: int, stream: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            self._close_output(fd)
            return
        self._keep(self.tail, chunk)
        if self._split:
            self._keep(self.stream_tails[stream], chunk)

    def _close_output(self, fd: int) -> None:
        if fd in self._output_fds:
            self._output_fds.remove(fd)
            self._loop.remove_reader(fd)
            os.close(fd)
        if not self._output_fds and not self._ended.done():
            self._ended.set_result(None)

    def _stop_reading(self) -> None:
        for fd in list(self._output_fds):
            self._close_output(fd)
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
    import signal  # here: a one-shot that runs no command never needs it

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
