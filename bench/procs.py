"""Children of a benchmark: real pitrix processes started the way operators start them.

Every one prints a JSON ready line (docs/internals.md); we wait for it with a deadline, never poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pitrix.cli.demo import Child as DemoChild
from pitrix.cli.demo import stop_child


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def private_net() -> int:
    """A second octet for a 127.X.0.0/16 of our own (never 127.100, the demo's default)."""
    return random.randint(101, 254)


def host_ip(octet: int, n: int) -> str:
    """The n-th address (n from 0) of the private 127.<octet>.0.0/16, skipping .0, .1 and .255."""
    return f"127.{octet}.{n // 250}.{n % 250 + 2}"


@dataclass
class Child(DemoChild):
    """A started pitrix process (the demo's record of one), with what benchmarks ask of it."""

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` (a child that already died is simply reaped)."""
        with contextlib.suppress(ProcessLookupError):
            await stop_child(self, timeout)
        await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


async def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` with stderr to ``log``; returns before it is ready (see ``ready``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PITRIX_LOG_FORMAT": "json", **(env or {})},
        )
    return Child(name, process, {}, log)


class ChildExited(RuntimeError):
    """A child that exited before its ready line; ``returncode`` says how."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


async def ready(child: Child, log: Path, timeout: float = 120.0) -> Child:
    """Wait for the child's ready line; a child that dies or hangs is an error quoting its log."""
    assert child.process.stdout is not None
    try:
        line = await asyncio.wait_for(child.process.stdout.readline(), timeout)
    except TimeoutError:
        await child.kill()
        raise RuntimeError(f"{child.name} not ready in {timeout:.0f}s: {tail(log)}") from None
    if not line:
        await child.process.wait()
        code = child.process.returncode
        raise ChildExited(f"{child.name} exited ({code}): {tail(log)}", code)
    child.ready = json.loads(line)
    return child


async def start(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    return await ready(await spawn(name, argv, log, env), log)


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a live process (with ``children``: of the children it reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """CPU time of a live process's threads in nanoseconds (the scheduler's own count, not 10 ms
    ticks: fine enough for one small round of one process)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended since the listing
            continue
    return total


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a live process from /proc/<pid>/status (VmRSS now, VmHWM its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def connections_to(url: str) -> int:
    """Established TCP connections in this network namespace whose far end is ``url``'s host and
    port (IPv4): how many a server holds for its clients, counted from the clients' side."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    packed = socket.inet_aton(parts.hostname)
    far = f"{int.from_bytes(packed, 'little'):08X}:{parts.port:04X}"
    established = "01"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == far and fields[3] == established:
            count += 1
    return count
