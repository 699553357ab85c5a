"""Group commit: puts from many concurrent callers carried to etcd in as few transactions as
possible, each caller answered only once its write is stored.

When one change reaches a hundred agents, a hundred status reports follow within milliseconds;
as single puts they were a hundred gRPC round trips, a third of metad's CPU for the change. Here
the first put goes out at once (a lone write waits for nothing), and the puts that arrive while a
transaction is in flight leave together in the next one, so a burst costs a handful of
transactions and never waits for a timer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pitrix.store.client import Store, StoreUnavailable
from pitrix.store.types import Op

# etcd refuses a transaction of more operations than its --max-txn-ops (128 by default).
MAX_OPS = 128


@dataclass(slots=True)
class _Put:
    key: str
    value: bytes
    lease: int
    done: asyncio.Future[int]


class GroupedPuts:
    """Puts of one store, committed together when they arrive together."""

    def __init__(self, store: Store, max_ops: int = MAX_OPS) -> None:
        self.store = store
        self.max_ops = max_ops
        self.transactions = 0  # how many it took (the benchmark and tests read it)
        self._queue: list[_Put] = []
        self._flusher: asyncio.Task[None] | None = None

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Store ``key`` (under ``lease`` when given); returns the revision of the transaction
        that wrote it. A failed transaction fails every put in it with the store's error."""
        data = value.encode() if isinstance(value, str) else value
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Put(key, data, lease, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="grouped-puts")
        return await done  # a caller that goes away leaves its put in the batch: it is written

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_ops], self._queue[self.max_ops :]
                await self._commit(batch)
        finally:
            self._flusher = None

    async def _commit(self, batch: list[_Put]) -> None:
        # One transaction may not name a key twice: the newest value of a key is the one stored,
        # and every caller that wrote it hears the same revision.
        newest: dict[str, _Put] = {}
        for put in batch:
            newest[put.key] = put
        self.transactions += 1
        try:
            ops = [Op("put", p.key, p.value, p.lease) for p in newest.values()]
            revision = (await self.store.txn([], ops)).revision
        except StoreUnavailable as exc:
            _fail(batch, exc)
            return
        except Exception as exc:
            if len(newest) == 1 or not any(p.lease for p in newest.values()):
                _fail(batch, exc)
                return
            # etcd refuses the whole transaction for one lease it no longer has (one heartbeat's
            # lease expired between its refresh and this put): the others must not fail with it.
            await self._one_by_one(batch, newest)
            return
        for put in batch:
            if not put.done.done():
                put.done.set_result(revision)

    async def _one_by_one(self, batch: list[_Put], newest: dict[str, _Put]) -> None:
        for key, put in newest.items():
            self.transactions += 1
            try:
                revision = (await self.store.txn([], [Op("put", key, put.value, put.lease)])).revision
            except Exception as exc:
                _fail([p for p in batch if p.key == key], exc)
                continue
            for each in batch:
                if each.key == key and not each.done.done():
                    each.done.set_result(revision)


def _fail(puts: list[_Put], exc: Exception) -> None:
    for put in puts:
        if not put.done.done():
            put.done.set_exception(exc)
