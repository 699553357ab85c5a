"""Running a pitrix process's event loop.

uvloop when it is installed (an order of magnitude less memory per TLS connection and faster
I/O), the stdlib loop otherwise. A process that holds a connection or two and mostly waits (the
agent) may ask for the stdlib loop: uvloop's extension is ~2 MiB of its resident memory and buys
it nothing it can measure. The garbage collector is tuned for a long-running process first (see
gctune.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from pitrix import gctune

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, tune_gc: bool = True, prefer_uvloop: bool = True) -> T:
    """Run ``main`` to completion on the best available event loop.

    ``tune_gc`` False keeps CPython's collector settings: the agent's choice, a small process on
    every VM whose figures the tuning did not change (the daemons' large heaps are what it is for).
    ``prefer_uvloop`` False runs it on the stdlib loop even where uvloop is installed.
    """
    if tune_gc:
        gctune.for_service()
    if not prefer_uvloop:
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended; what they ended with is not raised.

    Unlike ``task.cancel()`` then ``with suppress(CancelledError): await task``, this never
    swallows a cancellation of the caller itself: the suppress cannot tell the task's
    CancelledError from the caller's, and a caller whose cancel is swallowed goes on as if never
    asked to stop (the way a hung job held pitrixd's stop). ``asyncio.wait`` raises only the
    caller's own, so clean-up code can call this and still be stopped.
    """
    for task in tasks:
        task.cancel()
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the task logs its own failures; not one to repeat here
