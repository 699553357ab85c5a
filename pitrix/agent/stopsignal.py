"""SIGTERM and SIGINT stop a long-running agent, without ``loop.add_signal_handler``.

asyncio's ``add_signal_handler`` checks its callback with ``inspect.iscoroutinefunction``, and
``inspect`` with what it imports (ast, dis, tokenize) is about 1 MiB of a watching agent's
resident memory that nothing else on its path uses. This is the stdlib loop's own mechanism
through public calls: a Python handler that does nothing (so the signal neither kills the process
nor raises in whatever code it lands), and the C handler's wakeup pipe, which the loop watches.
The callback then runs as an ordinary loop callback, whichever thread the kernel delivered the
signal to (a worker thread's signal would not wake a loop waiting in epoll otherwise).

The handlers are set before the loop starts: a signal that arrives before the loop watches the
pipe waits in it, and asyncio.run, finding SIGINT taken, does not install its own handler (whose
repr, formatted by ``signal.signal`` when it is replaced, loads ``inspect``). The stdlib loop
only: uvloop sets a wakeup fd of its own when it starts running, and the signal would then be
swallowed by the no-op handler (under uvloop, ``add_signal_handler`` is the way).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any


def _noop(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup pipe carries the signal to the loop."""


class StopSignals:
    """``signals`` caught from ``__enter__`` to ``__exit__``; ``call`` names what they do on the
    running loop. Main thread only, as any signal handler."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._wanted = {int(sig) for sig in signals}
        self._fds: tuple[int, int] | None = None
        self._previous_fd = -1
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._fds = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._fds[1], warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _noop) for sig in self._wanted}
        return self

    def call(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the running loop when one of the signals arrives (or arrived since
        ``__enter__``); until ``stop_calling``."""
        assert self._fds is not None, "StopSignals.call outside its with block"
        read_fd = self._fds[0]
        wanted = self._wanted

        def drain() -> None:
            try:
                arrived = os.read(read_fd, 256)
            except BlockingIOError:
                return
            if wanted.intersection(arrived):
                callback()

        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read_fd, drain)

    def stop_calling(self) -> None:
        """No more callbacks (before the loop closes); the signals stay caught."""
        if self._loop is not None and self._fds is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fds[0])
        self._loop = None

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop_calling()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_fd)
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None
