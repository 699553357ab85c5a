"""Where a process's CPU goes during one benchmark row: py-spy attached to it, and a summary.

Only for measurement (``python -m bench.orchestration --profile DIR``); nothing of the product
runs under it otherwise. py-spy samples from outside the process (``--nonblocking``: it does not
stop it to read its stacks), so the figures of the row it watches stay close to an unwatched one.
Idle stacks (a loop waiting in ``select``) are left out by py-spy, so the samples are CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from bench import procs

# py-spy's raw frames: ``function (path/to/module.py:line)``.
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def executable() -> str | None:
    """py-spy beside this Python (a venv's), else on PATH; None without it."""
    beside = Path(procs.bin_path("py-spy"))
    return str(beside) if beside.exists() else shutil.which("py-spy")


def available() -> bool:
    return executable() is not None


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` by name (threads of one name summed): which of the
    loop, the gRPC core's threads and the executor's workers the time went to."""
    tick = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            by_name[name] = by_name.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return by_name


@contextlib.asynccontextmanager
async def sampling(pid: int, out: Path, rate: int = 100) -> AsyncIterator[None]:
    """py-spy records ``pid`` into ``out`` (collapsed stacks, one ``frames count`` a line) while
    the block runs; SIGINT makes it write the file, and it is waited for before the block ends.
    Only stacks holding the GIL are sampled (``--gil``): the process's Python work, not the gRPC
    core's or a TLS library's time with the GIL released. Beside it, ``<out>.threads``: CPU
    seconds per thread name during the block."""
    exe = await asyncio.to_thread(executable)
    if exe is None:
        raise RuntimeError("py-spy is not installed")
    await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
    spy = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        str(rate),
        "--nonblocking",
        "--gil",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    threads = thread_cpu(pid)
    try:
        yield
    finally:
        after = thread_cpu(pid)
        spent = {name: after[name] - threads.get(name, 0.0) for name in after}
        text = "".join(f"{cpu:8.2f}  {name}\n" for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1]))
        await asyncio.to_thread(out.with_suffix(".threads").write_text, text)
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(spy.wait(), 60)
        except TimeoutError:
            spy.kill()
            await spy.wait()


def load(path: Path) -> list[tuple[list[str], int]]:
    """The collapsed stacks of a py-spy raw file: (frames outermost first, samples)."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def where(frame: str) -> str:
    """A frame without its line number: ``function (module.py)``."""
    match = FRAME.match(frame)
    return f"{match['func']} ({match['file']})" if match else frame


def summary(stacks: list[tuple[list[str], int]], top: int = 40) -> str:
    """Inclusive samples per function (a function counted once per stack, however deep it
    recurses) and self samples per function, as text: the biggest costs first."""
    total = sum(n for _, n in stacks) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks:
        names = [where(f) for f in frames]
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    lines = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        lines += [f"{100 * n / total:6.1f}%  {n:7d}  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    """``python -m bench.profiling FILE [TOP]``: the summary of a py-spy raw file."""
    import sys

    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    print(summary(load(Path(sys.argv[1])), top))


if __name__ == "__main__":
    main()
