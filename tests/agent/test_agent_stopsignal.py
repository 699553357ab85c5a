"""pitrix.agent.stopsignal: SIGTERM/SIGINT reach the loop through the wakeup pipe, whichever
thread the kernel hands them to, and one that arrives before the loop watches is not lost."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from pitrix.agent.stopsignal import StopSignals


async def test_a_signal_delivered_to_a_worker_thread_calls_back_on_the_loop() -> None:
    """A worker thread's signal does not interrupt the main thread's epoll: only the pipe can
    wake the loop, so this fails unless the wakeup fd carries it."""
    loop = asyncio.get_running_loop()
    called: asyncio.Future[str] = loop.create_future()
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals((signal.SIGTERM, signal.SIGINT)) as stops:
        stops.call(lambda: called.set_result(threading.current_thread().name))

        def in_a_thread() -> None:
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        await asyncio.to_thread(in_a_thread)
        assert await asyncio.wait_for(called, 10) == threading.main_thread().name
        stops.stop_calling()
    assert signal.getsignal(signal.SIGTERM) == before


async def test_a_signal_before_the_loop_watches_is_acted_on_once_it_does() -> None:
    called = asyncio.Event()
    before = signal.getsignal(signal.SIGINT)
    with StopSignals((signal.SIGINT,)) as stops:
        os.kill(os.getpid(), signal.SIGINT)  # caught: neither KeyboardInterrupt nor lost
        stops.call(called.set)
        await asyncio.wait_for(called.wait(), 10)
        stops.stop_calling()
    assert signal.getsignal(signal.SIGINT) == before
