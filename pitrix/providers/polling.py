"""Backoff for every provider: repeating a call in place and polling until a state is reached.

All three clouds share these, so they back off the same way (doubling, jittered, capped), retry
the same failures (:mod:`pitrix.providers.errors`) and time out with the same ``ProviderError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog

from pitrix.backoff import Backoff
from pitrix.providers.base import Instance
from pitrix.providers.errors import Failure, ProviderError

T = TypeVar("T")

GONE = ("terminated", "ceased")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    action: str,
    attempts: int,
    log: structlog.typing.FilteringBoundLogger,
    backoff: Backoff | None = None,
    idempotent: bool = True,
    budget: float | None = None,
) -> T:
    """``call()``, repeated while its failure lets the call be sent again as it is.

    That is a ``NOTHING_DONE`` failure for any call, a ``TRANSIENT`` one only for an ``idempotent``
    call (one that changes nothing, or that the cloud deduplicates by a client token). At most
    ``attempts`` calls, none started after ``budget`` seconds. An error given up on after at least
    one retry is marked ``exhausted``, so that the step executor does not retry it once more; one
    not retried here (a create that may have acted) is left to the step, which looks first.
    """
    delays = backoff or Backoff(0.1, 5.0)
    deadline = None if budget is None else time.monotonic() + budget
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.failure.repeatable(idempotent=idempotent):
                raise
            delay = delays.next()
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if attempt >= attempts or out_of_time:
                exc.exhausted = exc.exhausted or attempt > 1
                raise
            log.info("provider.retry", action=action, attempt=attempt, code=exc.code, delay=round(delay, 3))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    backoff: Backoff | None = None,
) -> T:
    """Poll ``check`` until it returns a value; it raises to give up. A timeout is ``TRANSIENT``:
    the step that waited may run again (and wait again)."""
    deadline = time.monotonic() + timeout
    delays = backoff or Backoff(0.05, 1.0, factor=1.5)
    while True:
        result = await check()
        if result is not None:
            return result
        delay = delays.next()
        if time.monotonic() + delay > deadline:
            raise ProviderError(
                f"{what}: not done after {timeout}s", code="timeout", failure=Failure.TRANSIENT
            )
        await asyncio.sleep(delay)


async def wait_all_running(
    lookup: Callable[[list[str]], Awaitable[Mapping[str, Instance]]],
    instance_ids: list[str],
    *,
    timeout: float,
    cloud: str,
    halted: Callable[[Instance], bool],
    backoff: Backoff | None = None,
) -> list[Instance]:
    """Poll ``lookup(ids)`` until every instance runs; one missing, terminated or ``halted`` fails at once.

    Failing early matters: an instance that stopped or broke will not start by itself, and the
    runtime would otherwise wait out the whole timeout before replacing it.
    """
    if not instance_ids:
        return []

    async def all_running() -> list[Instance] | None:
        found = await lookup(instance_ids)
        missing = [iid for iid in instance_ids if iid not in found]
        gone = [iid for iid, i in found.items() if i.status in GONE]
        stuck = [iid for iid, i in found.items() if i.status not in GONE and halted(i)]
        if missing or gone or stuck:
            raise ProviderError(
                f"{cloud}: instances will not run: missing {missing}, terminated {gone}, "
                f"stopped or failed {stuck}",
                code="not-running",
            )
        if all(found[iid].status == "running" for iid in instance_ids):
            return [found[iid] for iid in instance_ids]
        return None

    return await wait_for(
        all_running,
        timeout=timeout,
        what=f"{cloud}: instances {instance_ids} running",
        backoff=backoff or Backoff(0.05, 2.0),
    )
