"""Waiting on pitrixd's etcd keys: until what a test reads from the store satisfies it.

Shared by the replica tests (tests/runtime/test_fleet_share.py, tests/chaos/test_replicas_share.py):
each reads something (the owner keys, cluster states, a job's journal) and waits, within a
deadline, for a predicate over it to hold; the read is redone after every change under the
prefixes it depends on, never on a timer.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pitrix.store import Store

T = TypeVar("T")


async def owner_keys(store: Store) -> dict[str, str]:
    """Each owned cluster's id and the replica holding it."""
    kvs, _ = await store.get_prefix("/owners/")
    return {kv.key.removeprefix("/owners/"): kv.text for kv in kvs}


def tally(owners: dict[str, str]) -> collections.Counter[str]:
    """Clusters held per replica."""
    return collections.Counter(owners.values())


async def _changed(store: Store, prefixes: Sequence[str], revision: int) -> None:
    """Return at the first change under any of ``prefixes`` after ``revision``."""

    async def one(prefix: str) -> None:
        async for _batch in store.watch_prefix(prefix, revision + 1):
            return

    tasks = [asyncio.create_task(one(prefix)) for prefix in prefixes]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a broken watch is the test's error, not a silent wake-up
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(
    store: Store,
    read: Callable[[Store], Awaitable[T]],
    holds: Callable[[T], bool],
    what: str,
    deadline: float,
    prefixes: Sequence[str] = ("/owners/",),
) -> T:
    """``read(store)`` once ``holds`` it, read again on every change under ``prefixes``.

    The revision to watch from is taken before the read, so a change landing during the read
    wakes the loop once more rather than being missed."""
    revision = await store.revision()
    now = await read(store)
    try:
        async with asyncio.timeout(deadline):
            while not holds(now):
                await _changed(store, prefixes, revision)
                revision = await store.revision()
                now = await read(store)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {deadline:.0f}s; last read {now!r}"[:2000]) from None
    return now
