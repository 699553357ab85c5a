"""Backoff for the SDK-backed providers: retrying a throttled call and polling until a state is reached.

QingCloud's client grew its own loops; the AWS and OpenStack providers share these so both back off
the same way (doubling, jittered, capped) and time out with the same retryable ``ProviderError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog

from pitrix.backoff import Backoff
from pitrix.providers.base import Instance, ProviderError

T = TypeVar("T")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    action: str,
    attempts: int,
    log: structlog.typing.FilteringBoundLogger,
    backoff: Backoff | None = None,
) -> T:
    """``call()``, repeated while it raises a retryable ``ProviderError`` and attempts remain.

    Only safe for calls the cloud deduplicates (a client token) or that change nothing.
    """
    delays = backoff or Backoff(0.1, 5.0)
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt >= attempts:
                raise
            delay = delays.next()
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
    """Poll ``check`` until it returns a value; it raises to give up. Times out as retryable."""
    deadline = time.monotonic() + timeout
    delays = backoff or Backoff(0.05, 1.0, factor=1.5)
    while True:
        result = await check()
        if result is not None:
            return result
        delay = delays.next()
        if time.monotonic() + delay > deadline:
            raise ProviderError(f"{what}: not done after {timeout}s", code="timeout", retryable=True)
        await asyncio.sleep(delay)


async def wait_all_running(
    lookup: Callable[[list[str]], Awaitable[Mapping[str, Instance]]],
    instance_ids: list[str],
    *,
    timeout: float,
    cloud: str,
    halted: Callable[[Instance], bool],
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
        gone = [iid for iid, i in found.items() if i.status == "terminated"]
        stuck = [iid for iid, i in found.items() if i.status != "terminated" and halted(i)]
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
        backoff=Backoff(0.05, 2.0),
    )
