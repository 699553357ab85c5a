"""The machine the figures were measured on, since a figure without its machine means little."""

from __future__ import annotations

import datetime
import os
import platform
import sys
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
