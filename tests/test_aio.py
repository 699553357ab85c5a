"""pitrix.aio.cancel_and_wait: clean-up that cancels a task never swallows its caller's cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from pitrix import aio
from pitrix.aio import cancel_and_wait


async def test_the_task_is_cancelled_and_waited_for() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def failing() -> None:
        raise RuntimeError("its own failure, logged where it happened")

    task, failed = asyncio.ensure_future(forever()), asyncio.ensure_future(failing())
    await started.wait()
    await cancel_and_wait(task, failed)  # neither the task's cancel nor its error is raised here
    assert task.cancelled() and failed.done()
    await cancel_and_wait(task)  # an ended task: nothing to do


async def test_a_cancel_of_the_caller_goes_through_a_task_that_ignores_its_own() -> None:
    """The pattern it replaces, ``with suppress(CancelledError): await task``, would swallow the
    caller's cancel here, and the caller would wait as long as the stubborn task."""
    release = asyncio.Event()
    stubborn_started, cleaning = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        stubborn_started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await release.wait()  # goes on as if never asked to stop

    inner = asyncio.ensure_future(stubborn())
    await stubborn_started.wait()

    async def clean_up() -> str:
        cleaning.set()
        await cancel_and_wait(inner)
        return "went on"

    caller = asyncio.ensure_future(clean_up())
    await cleaning.wait()
    await asyncio.sleep(0)  # one turn: the caller is now waiting on the stubborn task
    assert not caller.done()
    caller.cancel()
    done, _ = await asyncio.wait({caller}, timeout=5)
    assert caller in done and caller.cancelled()
    release.set()
    await inner


def test_run_takes_the_stdlib_loop_when_asked_and_uvloop_otherwise() -> None:
    """The agent asks for the stdlib loop (uvloop's ~2 MiB buys it nothing); the daemons do not."""

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert aio.run(which(), tune_gc=False, prefer_uvloop=False) == "asyncio.unix_events"
    assert aio.run(which(), tune_gc=False).startswith("uvloop")
