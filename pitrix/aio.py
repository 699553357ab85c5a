"""Running a pitrix process's event loop.

uvloop when it is installed (an order of magnitude less memory per TLS connection and faster
I/O), the stdlib loop otherwise; callers never choose. The garbage collector is tuned for a
long-running process first (see gctune.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from pitrix import gctune

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, tune_gc: bool = True) -> T:
    """Run ``main`` to completion on the best available event loop.

    ``tune_gc`` False keeps CPython's collector settings: the agent's choice, a small process on
    every VM whose figures the tuning did not change (the daemons' large heaps are what it is for).
    """
    if tune_gc:
        gctune.for_service()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)
