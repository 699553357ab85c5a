"""An async etcd store over aetcd's gRPC channel.

Keys are ``str`` (the store's optional ``prefix`` is prepended and stripped, so callers see their
own namespace), values are ``bytes`` (``str`` is accepted and UTF-8 encoded on the way in).
Everything returned is a plain type from :mod:`pitrix.store.types`.

Requests go to etcd's gRPC stubs directly rather than through aetcd's helpers: those drop the
response header (so the revision an answer reflects is lost) and cannot express count-only or
sorted, bounded ranges, which locks and honest revisions need. aetcd still owns the channel.

A store survives its etcd restarting: a request that fails because the connection is gone
reopens the channel (rotating to the next endpoint when several are configured) and is retried
within the store's timeout. Writes are retried only when the failure proves the request never
left this process; otherwise the caller gets :class:`StoreUnavailable` and decides, because a
blind retry of ``create`` or a CAS could report failure for a write that in fact succeeded.

Given :class:`~pitrix.store.tls.EtcdTLS`, the store speaks TLS and presents a client certificate
(``https://`` endpoints): the etcds pitrix runs itself answer nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc, watcher
from grpc import StatusCode
from grpc.aio import AioRpcError

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.store.tls import EtcdTLS, EtcdTLSError
from pitrix.store.types import KV, Compare, Op, TxnResult, WatchBatch

if TYPE_CHECKING:
    from pitrix.store.lease import KeptLease
    from pitrix.store.lock import Election, Lock
    from pitrix.store.watch_pool import WatchPool

T = TypeVar("T")

# Large prefixes come back in one range response; gRPC's default 4 MiB cap would refuse them.
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    # Notice a silently dead peer; etcd tolerates pings every 5 s or slower while a stream is open.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    # gRPC's default reconnect backoff grows to two minutes; a restarted etcd should be used at once.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1_000,
}

_RETRY_FIRST_DELAY = 0.05
_RETRY_MAX_DELAY = 0.5
# With one endpoint a new channel only starts the same connection attempt again: while etcd is
# down every failing call asked for one, and a metad with a few hundred agents swapped channels
# forty times a second (each swap cutting off the calls on the old one). gRPC's own reconnect
# backoff (above) keeps trying meanwhile.
_SWAP_COOLDOWN = 0.5

_COMPARE_TARGETS = {
    "value": rpc.Compare.VALUE,
    "version": rpc.Compare.VERSION,
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
}
_COMPARE_RESULTS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_SORT_TARGETS = {
    "key": rpc.RangeRequest.KEY,
    "create": rpc.RangeRequest.CREATE,
    "mod": rpc.RangeRequest.MOD,
    "version": rpc.RangeRequest.VERSION,
    "value": rpc.RangeRequest.VALUE,
}
_SORT_ORDERS = {
    "none": rpc.RangeRequest.NONE,
    "ascend": rpc.RangeRequest.ASCEND,
    "descend": rpc.RangeRequest.DESCEND,
}


class StoreError(Exception):
    """etcd could not be reached or refused an operation."""


class StoreUnavailable(StoreError):
    """No etcd endpoint answered within the store's timeout (or the answer was lost on the way)."""


class RevisionCompacted(StoreError):
    """The revision asked for is older than etcd's compaction point."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def _endpoint(url: str, tls: EtcdTLS | None = None) -> tuple[str, int]:
    """``(host, port)`` of an endpoint; its scheme must agree with whether TLS material is given."""
    if not isinstance(url, str) or not url:
        raise StoreError(f"endpoints: {url!r} is not an etcd URL")
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"endpoints: {url!r} is not an etcd URL ({exc})") from exc
    if parts.scheme not in ("http", "https", ""):
        raise StoreError(f"endpoints: {url!r}: an etcd endpoint is http:// or https://")
    if parts.scheme == "https" and tls is None:
        raise StoreError(
            f"endpoints: {url!r} is https:// but no TLS material (CA, client certificate) is given"
        )
    if parts.scheme == "http" and tls is not None:
        raise StoreError(f"endpoints: {url!r} is plain http:// but TLS material is given; use https://")
    if not parts.hostname or not port:
        raise StoreError(f"endpoints: {url!r} must look like https://host:port")
    return parts.hostname, port


class _TLSClient(aetcd.Client):
    """An aetcd client whose channel is TLS with our client certificate.

    aetcd 1.0.0's ``Client.connect`` only ever opens ``grpc.aio.insecure_channel`` and takes no
    credentials, so an etcd with ``--client-cert-auth`` cannot be reached through it. This opens
    ``grpc.aio.secure_channel`` instead and wires the same stubs the store uses; nothing else of
    aetcd's connect applies (its user/password authentication is not used here).
    """

    def __init__(
        self,
        host: str,
        port: int,
        credentials: grpc.ChannelCredentials,
        timeout: float,
        options: dict[str, Any],
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout, options=options)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        channel = grpc.aio.secure_channel(
            f"{self._host}:{self._port}", self._credentials, self._options.items()
        )
        self.channel = channel
        self.kvstub = rpc.KVStub(channel)
        self.clusterstub = rpc.ClusterStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.maintenancestub = rpc.MaintenanceStub(channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(channel), timeout=self._timeout, metadata=None)
        self._connected.set()


def _as_bytes(value: bytes | str, field: str = "value") -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise StoreError(f"{field}: expected bytes or str, got {type(value).__name__}")


def _check_key(key: object, field: str = "key") -> str:
    if not isinstance(key, str):
        raise StoreError(f"{field}: expected str, got {type(key).__name__}")
    return key


def _check_lease(lease: object) -> int:
    if not isinstance(lease, int) or isinstance(lease, bool) or lease < 0:
        raise StoreError(f"lease: expected a lease id (int >= 0), got {lease!r}")
    return lease


def _range_end(key: bytes) -> bytes:
    """The first key after every key starting with ``key`` (etcd's prefix convention)."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _is_connection_error(code: StatusCode) -> bool:
    return code in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.CANCELLED)


def _never_sent(exc: AioRpcError) -> bool:
    """Whether the failure proves the request never reached etcd (so a write may be retried)."""
    if exc.code() != StatusCode.UNAVAILABLE:
        return False
    details = (exc.details() or "").lower()
    return any(
        marker in details
        for marker in ("failed to connect", "connection refused", "no address", "name resolution", "dns")
    )


def cancelled_by_caller() -> bool:
    """Whether a CancelledError seen now is a real cancellation of the running task.

    grpc.aio raises CancelledError out of calls on a channel that was closed, which here means
    the store swapped channels (or closed); that must not pass for a cancellation of the caller.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def send_on_stream(call: Any, request: Any) -> None:
    """``await call.write(request)`` that cannot outlive the call.

    grpc.aio's write first waits for the call's initial metadata to be sent; a call that fails
    before that (no connection yet, its channel closed by a reconnect) never says it was sent,
    and the write then waits for good: a watch resuming during an etcd restart hung there,
    silent, while everything else recovered. Racing the write against the call's end turns that
    into :class:`StoreUnavailable`, which callers already resume from.
    """
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_done(_: object) -> None:
        if not ended.done():
            ended.set_result(None)

    call.add_done_callback(on_done)
    write = asyncio.ensure_future(call.write(request))
    try:
        await asyncio.wait({write, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not write.done():
            write.cancel()
            await asyncio.wait({write})
        ended.cancel()
    if write.cancelled():
        raise StoreUnavailable("the call ended before its request was sent")
    try:
        write.result()  # what the write raised, if anything
    except asyncio.InvalidStateError as exc:  # the call had ended before the write began
        raise StoreUnavailable(f"the call ended before its request was sent: {exc}") from exc


class Store:
    """One connection to one etcd cluster, scoped to a key prefix."""

    def __init__(
        self, endpoints: list[str], prefix: str = "", timeout: float = 5.0, tls: EtcdTLS | None = None
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise StoreError("endpoints: no etcd endpoints given")
        if tls is not None and not isinstance(tls, EtcdTLS):
            raise StoreError(f"tls: expected EtcdTLS, got {type(tls).__name__}")
        for url in endpoints:
            _endpoint(url, tls)
        if not isinstance(prefix, str):
            raise StoreError(f"prefix: expected str, got {type(prefix).__name__}")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise StoreError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.endpoints = list(endpoints)
        self.prefix = prefix.rstrip("/")
        self.timeout = float(timeout)
        self.tls = tls
        self._client: aetcd.Client | None = None
        self._endpoint_index = 0
        self._generation = 0
        self._closed = False
        self._reconnect_lock = asyncio.Lock()
        self._swapped_at = -_SWAP_COOLDOWN  # loop time of the last channel swap
        self._background: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._watch_pool: WatchPool | None = None  # made on the first watch (see watch_pool.py)
        self._log = get_logger("pitrix.store", prefix=self.prefix)

    # -- connection -------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, endpoints: list[str], prefix: str = "", timeout: float = 5.0, tls: EtcdTLS | None = None
    ) -> Store:
        """A store whose channel is open; etcd itself is contacted by the first request."""
        store = cls(endpoints, prefix, timeout, tls)
        await store._open()
        return store

    @property
    def endpoint(self) -> str:
        """The endpoint the store currently talks to."""
        return self.endpoints[self._endpoint_index % len(self.endpoints)]

    async def _open(self) -> None:
        host, port = _endpoint(self.endpoint, self.tls)
        client: aetcd.Client
        if self.tls is None:
            client = aetcd.Client(host=host, port=port, timeout=self.timeout, options=_CHANNEL_OPTIONS)
        else:
            # Read at every (re)connect: renewed certificate files are taken up by the next channel.
            try:
                ca, key, chain = await asyncio.to_thread(self.tls.read)
            except EtcdTLSError as exc:
                raise StoreError(f"etcd TLS: {exc}") from exc
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=chain
            )
            client = _TLSClient(host, port, credentials, self.timeout, _CHANNEL_OPTIONS)
        await client.connect()
        self._client = client
        self._closed = False

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            raise StoreError("store is not connected")
        return self._client

    @property
    def watch_pool(self) -> WatchPool:
        """The channels this store's long-lived streams run on, apart from its own (see there)."""
        if self._watch_pool is None:
            from pitrix.store.watch_pool import WatchPool

            self._watch_pool = WatchPool(self)
        return self._watch_pool

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: a stream that breaks after it ends instead of resuming."""
        return self._closed

    @property
    def generation(self) -> int:
        """Bumped each time the channel is replaced; streams compare it to notice a reconnect."""
        return self._generation

    async def reconnect(self, failed_generation: int | None = None) -> None:
        """Replace the channel (next endpoint first) unless done already since ``failed_generation``
        or, with a single endpoint, in the last ``_SWAP_COOLDOWN`` seconds."""
        async with self._reconnect_lock:
            if self._closed:
                raise StoreError("store is closed")
            if failed_generation is not None and failed_generation != self._generation:
                return
            now = asyncio.get_running_loop().time()
            if (
                failed_generation is not None
                and len(self.endpoints) == 1
                and now - self._swapped_at < _SWAP_COOLDOWN
            ):
                return
            self._swapped_at = now
            old = self._client
            if len(self.endpoints) > 1:
                self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
            await self._open()
            self._generation += 1
            self._log.info("store.reconnected", endpoint=self.endpoint, generation=self._generation)
            if old is not None:
                await old.close()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        if self._watch_pool is not None:
            await self._watch_pool.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> Store:
        if self._client is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self, what: str, invoke: Callable[[aetcd.Client], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        """Run one request, reconnecting and retrying on connection loss within the store's timeout.

        ``idempotent=False`` retries only failures that prove the request never reached etcd.
        Used by the modules beside this one (watch, lease, lock); not meant for callers outside.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        backoff: Backoff | None = None  # made on the first failure: most calls have none
        while True:
            client = self.client
            generation = self._generation
            try:
                return await invoke(client)
            except AioRpcError as exc:
                code = exc.code()
                if not _is_connection_error(code) or self._closed:
                    raise self._translate(what, exc) from exc
                if code == StatusCode.CANCELLED and generation == self._generation:
                    # Not a channel swap of ours: gRPC gave up on the call itself.
                    raise StoreUnavailable(f"{what}: request cancelled: {exc.details()}") from exc
                retriable = idempotent or _never_sent(exc)
                backoff = backoff or Backoff(_RETRY_FIRST_DELAY, _RETRY_MAX_DELAY)
                delay = backoff.next()
                if loop.time() + delay >= deadline or not retriable:
                    self._schedule_reconnect(generation)
                    raise StoreUnavailable(
                        f"{what}: etcd at {self.endpoint} unavailable: {exc.details()}"
                    ) from exc
                if code != StatusCode.CANCELLED:
                    await self.reconnect(generation)
            except aetcd.ClientError as exc:
                raise StoreError(f"{what}: {exc}") from exc
            except asyncio.CancelledError:
                if cancelled_by_caller():
                    raise
                if self._closed:
                    raise StoreError(f"{what}: store closed during the request") from None
                if generation == self._generation or not idempotent:
                    # Not our channel swap, or a write that may have landed before the swap.
                    raise StoreUnavailable(f"{what}: request cut off by a reconnect") from None
                continue  # the channel was swapped under an idempotent request: just ask again
            await asyncio.sleep(delay)

    def _schedule_reconnect(self, generation: int) -> None:
        """Give the next call a fresh channel without making this failing one wait for it."""
        if len(self.endpoints) > 1:
            task = asyncio.get_running_loop().create_task(self._quiet_reconnect(generation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _quiet_reconnect(self, generation: int) -> None:
        with contextlib.suppress(StoreError):
            await self.reconnect(generation)

    @staticmethod
    def _translate(what: str, exc: AioRpcError) -> StoreError:
        details = exc.details() or str(exc.code())
        if exc.code() == StatusCode.OUT_OF_RANGE and "compacted" in details:
            return RevisionCompacted(f"{what}: {details}")
        return StoreError(f"{what}: {details}")

    # -- keys -------------------------------------------------------------------------------------

    def _k(self, key: str) -> bytes:
        return (self.prefix + _check_key(key)).encode()

    def _unk(self, raw: bytes) -> str:
        key = raw.decode(errors="surrogateescape")
        return key[len(self.prefix) :] if self.prefix and key.startswith(self.prefix) else key

    def prefix_range(self, prefix: str) -> tuple[bytes, bytes]:
        """The ``[start, end)`` byte range of every key under ``prefix`` in this store's namespace."""
        _check_key(prefix, "prefix")
        if not prefix and self.prefix:
            # The bare store prefix would also cover "/test-ab..." beside "/test-a"; stay inside ours.
            prefix = "/"
        start = self._k(prefix)
        if not start:
            return b"\0", b"\0"
        return start, _range_end(start)

    def _kv(self, item: Any) -> KV:
        return KV(
            key=self._unk(item.key),
            value=bytes(item.value),
            mod_revision=int(item.mod_revision),
            create_revision=int(item.create_revision),
            version=int(item.version),
            lease=int(item.lease),
        )

    def _rpc(self, client: aetcd.Client) -> dict[str, Any]:
        return {"timeout": self.timeout, "metadata": client.metadata}

    # -- reads ------------------------------------------------------------------------------------

    async def range(
        self,
        start: bytes,
        end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        sort_target: str = "key",
        sort_order: str = "none",
        count_only: bool = False,
        max_create_revision: int = 0,
    ) -> tuple[list[KV], int, int]:
        """A raw range request on absolute keys: ``(kvs, count, header revision)``."""
        if sort_target not in _SORT_TARGETS:
            raise StoreError(f"sort_target: {sort_target!r} is not one of {sorted(_SORT_TARGETS)}")
        if sort_order not in _SORT_ORDERS:
            raise StoreError(f"sort_order: {sort_order!r} is not one of {sorted(_SORT_ORDERS)}")
        request = rpc.RangeRequest(
            key=start,
            range_end=end,
            limit=limit,
            revision=revision,
            sort_target=_SORT_TARGETS[sort_target],
            sort_order=_SORT_ORDERS[sort_order],
            count_only=count_only,
            max_create_revision=max_create_revision,
        )

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.Range(request, **self._rpc(client))

        response = await self.call(f"range {start!r}", invoke)
        return [self._kv(item) for item in response.kvs], int(response.count), int(response.header.revision)

    async def get(self, key: str) -> KV | None:
        kvs, _, _ = await self.range(self._k(key))
        return kvs[0] if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted by key) and the revision the answer reflects."""
        start, end = self.prefix_range(prefix)
        kvs, _, revision = await self.range(start, end)
        return kvs, revision

    async def revision(self) -> int:
        """The cluster's current revision (the header of a count-only range; nothing is read)."""
        _, _, revision = await self.range(b"\0", b"\0", count_only=True)
        return revision

    # -- writes -----------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        request = rpc.PutRequest(key=self._k(key), value=_as_bytes(value), lease=_check_lease(lease))

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.Put(request, **self._rpc(client))

        response = await self.call(f"put {key}", invoke, idempotent=False)
        return int(response.header.revision)

    async def put_many(self, items: Iterable[tuple[str, bytes | str]], lease: int = 0) -> int:
        """Write several keys in one transaction (all or nothing); returns its revision."""
        ops = [Op("put", key, _as_bytes(value), lease) for key, value in items]
        return (await self.txn([], ops)).revision

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``True`` if it existed."""
        request = rpc.DeleteRangeRequest(key=self._k(key))

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.DeleteRange(request, **self._rpc(client))

        response = await self.call(f"delete {key}", invoke, idempotent=False)
        return int(response.deleted) > 0

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many there were."""
        start, end = self.prefix_range(prefix)
        request = rpc.DeleteRangeRequest(key=start, range_end=end)

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.DeleteRange(request, **self._rpc(client))

        response = await self.call(f"delete_prefix {prefix}", invoke, idempotent=False)
        return int(response.deleted)

    async def compact(self, revision: int, physical: bool = True) -> None:
        """Drop history before ``revision`` (watchers asking for older revisions then resync)."""
        if not isinstance(revision, int) or revision < 1:
            raise StoreError(f"revision: expected a positive revision, got {revision!r}")
        request = rpc.CompactionRequest(revision=revision, physical=physical)

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.Compact(request, **self._rpc(client))

        await self.call(f"compact {revision}", invoke)

    # -- transactions -----------------------------------------------------------------------------

    def _compare(self, c: Compare) -> Any:
        if not isinstance(c, Compare):
            raise StoreError(f"compare: expected Compare, got {type(c).__name__}")
        if c.target not in _COMPARE_TARGETS:
            raise StoreError(f"compare.target: {c.target!r} is not one of {sorted(_COMPARE_TARGETS)}")
        if c.op not in _COMPARE_RESULTS:
            raise StoreError(f"compare.op: {c.op!r} is not one of {sorted(_COMPARE_RESULTS)}")
        message = rpc.Compare(
            key=self._k(c.key), target=_COMPARE_TARGETS[c.target], result=_COMPARE_RESULTS[c.op]
        )
        if c.target == "value":
            message.value = _as_bytes(c.value, "compare.value")  # type: ignore[arg-type]
            return message
        if not isinstance(c.value, int) or isinstance(c.value, bool):
            raise StoreError(f"compare.value: target {c.target!r} compares with an int, got {c.value!r}")
        if c.target == "version":
            message.version = c.value
        elif c.target == "create":
            message.create_revision = c.value
        else:
            message.mod_revision = c.value
        return message

    def _request_op(self, op: Op) -> Any:
        if not isinstance(op, Op):
            raise StoreError(f"ops: expected Op, got {type(op).__name__}")
        if op.kind == "put":
            put = rpc.PutRequest(key=self._k(op.key), value=_as_bytes(op.value), lease=_check_lease(op.lease))
            return rpc.RequestOp(request_put=put)
        if op.kind == "delete":
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._k(op.key)))
        if op.kind == "delete_prefix":
            start, end = self.prefix_range(op.key)
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))
        if op.kind == "get":
            return rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(op.key)))
        raise StoreError(f"op.kind: {op.kind!r} is not one of put, delete, delete_prefix, get")

    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        """Apply ``success`` if every comparison holds, ``failure`` otherwise, atomically.

        ``gets`` holds one entry per ``get`` op of the branch that ran; ``revision`` is the store's
        revision after the transaction (the write's revision when it wrote).
        """
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compare],
            success=[self._request_op(op) for op in success],
            failure=[self._request_op(op) for op in failure or []],
        )
        branch = list(success)

        async def invoke(client: aetcd.Client) -> Any:
            return await client.kvstub.Txn(request, **self._rpc(client))

        response = await self.call("transaction", invoke, idempotent=False)
        if not response.succeeded:
            branch = list(failure or [])
        gets: list[KV | None] = []
        for op, op_response in zip(branch, response.responses, strict=False):
            if op.kind == "get":
                kvs = op_response.response_range.kvs
                gets.append(self._kv(kvs[0]) if kvs else None)
        return TxnResult(bool(response.succeeded), int(response.header.revision), gets)

    async def create(self, key: str, value: bytes | str, lease: int = 0) -> bool:
        """Write ``key`` only if it does not exist; ``True`` if this call created it."""
        result = await self.txn([Compare(key, "create", "==", 0)], [Op("put", key, _as_bytes(value), lease)])
        return result.succeeded

    async def compare_and_swap(self, key: str, mod_revision: int, value: bytes | str) -> bool:
        """Write ``key`` only if it was last modified at ``mod_revision`` (0: only if absent)."""
        if not isinstance(mod_revision, int) or mod_revision < 0:
            raise StoreError(f"mod_revision: expected a revision (int >= 0), got {mod_revision!r}")
        target: Compare = (
            Compare(key, "create", "==", 0) if mod_revision == 0 else Compare(key, "mod", "==", mod_revision)
        )
        return (await self.txn([target], [Op("put", key, _as_bytes(value))])).succeeded

    # -- leases (low level; see lease.py for the kept-alive context manager) ----------------------

    async def grant_lease(self, ttl: int) -> tuple[int, int]:
        """Grant a lease of ``ttl`` seconds: ``(lease id, TTL etcd granted)``."""
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise StoreError(f"ttl: expected whole seconds >= 1, got {ttl!r}")
        request = rpc.LeaseGrantRequest(TTL=ttl)

        async def invoke(client: aetcd.Client) -> Any:
            return await client.leasestub.LeaseGrant(request, **self._rpc(client))

        # An unanswered grant leaves at most an orphan lease that expires by itself: safe to retry.
        response = await self.call("grant lease", invoke)
        if response.error:
            raise StoreError(f"grant lease: {response.error}")
        return int(response.ID), int(response.TTL)

    async def refresh_lease(self, lease_id: int) -> int:
        """Renew a lease once; returns its TTL afterwards, ``0`` when it no longer exists."""
        request = rpc.LeaseKeepAliveRequest(ID=_check_lease(lease_id))

        async def invoke(client: aetcd.Client) -> Any:
            call = client.leasestub.LeaseKeepAlive(**self._rpc(client))
            try:
                await send_on_stream(call, request)
                return await call.read()
            finally:
                call.cancel()

        response = await self.call(f"refresh lease {lease_id:x}", invoke)
        if response is None or not hasattr(response, "TTL"):
            raise StoreUnavailable(f"refresh lease {lease_id:x}: stream closed without an answer")
        return max(0, int(response.TTL))

    async def revoke_lease(self, lease_id: int) -> bool:
        """Revoke a lease (its keys are deleted); ``False`` if it did not exist any more."""
        request = rpc.LeaseRevokeRequest(ID=_check_lease(lease_id))

        async def invoke(client: aetcd.Client) -> Any:
            return await client.leasestub.LeaseRevoke(request, **self._rpc(client))

        try:
            await self.call(f"revoke lease {lease_id:x}", invoke)
        except StoreError as exc:
            if isinstance(exc.__cause__, AioRpcError) and exc.__cause__.code() == StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on a lease, ``-1`` when it does not exist (expired or revoked)."""
        request = rpc.LeaseTimeToLiveRequest(ID=_check_lease(lease_id))

        async def invoke(client: aetcd.Client) -> Any:
            return await client.leasestub.LeaseTimeToLive(request, **self._rpc(client))

        response = await self.call(f"lease ttl {lease_id:x}", invoke)
        return int(response.TTL)

    # -- watches ----------------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[WatchBatch]:
        """Changes under ``prefix`` from ``from_revision`` (inclusive; ``None``: from now on).

        One batch per etcd revision. The iterator survives a dropped stream or an etcd restart by
        resuming after the last revision it delivered, and turns a compacted start revision into a
        ``resync`` batch carrying the full current state; it ends only when the consumer stops.
        """
        from pitrix.store.watch import watch_prefix

        return watch_prefix(self, prefix, from_revision)

    # -- leases, locks, elections -----------------------------------------------------------------

    def lease(self, ttl: int) -> KeptLease:
        """An async context manager granting a lease kept alive by its own task (see lease.py)."""
        from pitrix.store.lease import KeptLease

        return KeptLease(self, ttl)

    def lock(self, name: str, ttl: int = 15) -> Lock:
        """An async context manager holding the named lock (see lock.py)."""
        from pitrix.store.lock import Lock

        return Lock(self, name, ttl)

    def election(self, name: str, candidate: str, ttl: int = 15) -> Election:
        """A leader election among ``candidate`` ids (see lock.py)."""
        from pitrix.store.lock import Election

        return Election(self, name, candidate, ttl)
