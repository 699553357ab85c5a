"""The machine the figures were measured on, since a figure without its machine means little."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def describe() -> dict[str, str]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB",
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        # Others' work on the same cores skews every figure: say how busy the machine was.
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def reference_ms() -> float:
    """A fixed pure-Python workload (dicts, strings, calls: what a render and a round are made of),
    best of five, in ms. Two sessions' hosts, both "AMD EPYC" with 2 cores, rendered the same
    template 4x apart (530 and 124 per second, 2026-12-04 and -05): figures from two runs compare
    only beside their reference."""

    def work() -> int:
        table: dict[str, int] = {}
        for i in range(20_000):
            key = f"/hosts/{i % 97}/ip"
            table[key] = table.get(key, 0) + len(key.split("/"))
        return sum(table.values())

    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best * 1000


class Stamp:
    """When and on how busy and how fast a machine a section ran. The host's speed moves within
    minutes (the reference loop read 8.2 ms and 16 ms ten minutes apart, 2026-12-05), so the loop
    is timed when the section begins and again when it ends: figures taken while the two disagree
    say little."""

    def __init__(self) -> None:
        self.machine = describe()
        self.began_ms = reference_ms()
        self.ended_ms: float | None = None

    def end(self) -> None:
        self.ended_ms = reference_ms()

    def text(self) -> str:
        loop = f"Python reference loop {self.began_ms:.1f} ms"
        if self.ended_ms is not None:
            loop += f" when it began, {self.ended_ms:.1f} ms when it ended"
        return (
            f"_Measured {self.machine['date']} on {self.machine['cpu']}; load average "
            f"{self.machine['load']} (1/5/15 min) when it began; {loop} (bench/machine.py: lower "
            "is a faster host)._"
        )
