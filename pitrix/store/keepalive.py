"""Lease renewals for many leases over one LeaseKeepAlive stream.

``Store.refresh_lease`` opens a stream per renewal, which is right for a lease or two renewed
every few seconds. metad renews one lease per agent at every heartbeat (3,000 agents at 5 s are
600 renewals a second), and opening a gRPC stream each time cost more CPU than the rest of the
heartbeat together. etcd answers keep-alive requests on one stream in the order they came, each
reply naming its lease, so one stream carries them all, as etcd's own Go client does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aetcd import rpc
from grpc.aio import EOF, AioRpcError

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.store.client import Store, StoreUnavailable, _check_lease, send_on_stream


class SharedKeepAlive:
    """``await refresh(lease_id)`` → the lease's TTL afterwards (0: etcd no longer has it).

    The stream is opened on first use and again after it broke; a renewal in flight when it breaks
    fails with ``StoreUnavailable`` (the caller decides whether to grant anew), it is not retried
    here, so a renewal never lands twice behind the caller's back.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._call: Any = None
        self._live = False  # whether the current stream has answered: one that never did only failed to open
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, deque[asyncio.Future[int]]] = {}
        self._write_lock = asyncio.Lock()
        self._log = get_logger("pitrix.store.keepalive", prefix=store.prefix)

    async def refresh(self, lease_id: int) -> int:
        request = rpc.LeaseKeepAliveRequest(ID=_check_lease(lease_id))
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # A caller cancelled mid-renewal (metad's handler gave up) leaves its future here; when the
        # stream breaks it is failed with nobody to see it: mark its error as seen, not "never
        # retrieved" in the log. A caller that does wait still gets it.
        answer.add_done_callback(_seen)
        async with self._write_lock:
            call = self._open()
            self._waiting.setdefault(lease_id, deque()).append(answer)
            try:
                await send_on_stream(call, request)  # a plain write could wait for good
            except (AioRpcError, asyncio.InvalidStateError, StoreUnavailable) as exc:
                self._broken(call, f"write: {exc}")
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a caller's cancel that
            # arrives together with the answer (see lease.py).
            async with asyncio.timeout(self.store.timeout):
                return await answer
        except TimeoutError:
            self._drop(lease_id, answer)
            raise StoreUnavailable(
                f"refresh lease {lease_id:x}: no answer within {self.store.timeout:g}s"
            ) from None

    def _open(self) -> Any:
        if self._call is None:
            client = self.store.client
            # No deadline: the stream lives as long as metad; each renewal has its own timeout.
            self._call = client.leasestub.LeaseKeepAlive(metadata=client.metadata)
            self._live = False
            self._reader = asyncio.create_task(self._read(self._call), name="lease-keepalive")
        return self._call

    async def _read(self, call: Any) -> None:
        try:
            while True:
                reply = await call.read()
                if reply is EOF:
                    self._broken(call, "etcd closed the stream")
                    return
                self._live = True
                pending = self._waiting.get(int(reply.ID))
                if not pending:
                    continue  # its caller timed out and went away
                answer = pending.popleft()
                if not pending:
                    del self._waiting[int(reply.ID)]
                if not answer.done():
                    answer.set_result(max(0, int(reply.TTL)))
        except AioRpcError as exc:
            self._broken(call, f"{exc.code().name}: {exc.details()}")
        except asyncio.CancelledError:
            self._broken(call, "closed")
            raise

    def _broken(self, call: Any, why: str) -> None:
        """Forget ``call`` (if it is still the current stream) and fail what waits on it."""
        if call is not self._call:
            return
        self._call = None
        call.cancel()
        waiting, self._waiting = self._waiting, {}
        if waiting:
            # A stream that never answered (etcd down: every renewal tries a new one) is the
            # caller's error to report, once; a live one breaking is news of its own.
            log = self._log.info if self._live else self._log.debug
            log("keepalive stream broke", error=why, renewals_failed=sum(map(len, waiting.values())))
        for pending in waiting.values():
            for answer in pending:
                if not answer.done():
                    answer.set_exception(StoreUnavailable(f"lease keep-alive stream: {why}"))

    def _drop(self, lease_id: int, answer: asyncio.Future[int]) -> None:
        pending = self._waiting.get(lease_id)
        if pending is not None and answer in pending:
            pending.remove(answer)
            if not pending:
                del self._waiting[lease_id]

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if self._call is not None:
            self._broken(self._call, "closed")
        if reader is not None:
            await cancel_and_wait(reader)


def _seen(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
