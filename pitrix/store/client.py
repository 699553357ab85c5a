"""An async etcd store over aetcd.

Keys are ``str`` (the store's optional ``prefix`` is prepended and stripped, so callers see their
own namespace), values are ``bytes`` (``str`` is accepted and UTF-8 encoded on the way in).
Everything returned is a plain type from :mod:`pitrix.store.types`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import aetcd

from pitrix.store.types import KV, Compare, Op, TxnResult, WatchBatch


class StoreError(Exception):
    """etcd could not be reached or refused an operation."""


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if not parts.hostname or not parts.port:
        raise StoreError(f"etcd endpoint {url!r} must look like http://host:port")
    return parts.hostname, parts.port


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Store:
    """One connection to one etcd cluster, scoped to a key prefix."""

    def __init__(self, endpoints: list[str], prefix: str = "", timeout: float = 5.0) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self.endpoints = list(endpoints)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._client: aetcd.Client | None = None
        self._endpoint_index = 0

    # -- connection -------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, endpoints: list[str], prefix: str = "", timeout: float = 5.0) -> Store:
        store = cls(endpoints, prefix, timeout)
        await store._open()
        return store

    async def _open(self) -> None:
        host, port = _endpoint(self.endpoints[self._endpoint_index % len(self.endpoints)])
        client = aetcd.Client(host=host, port=port, timeout=self.timeout)
        await client.connect()
        self._client = client

    @property
    def client(self) -> aetcd.Client:
        if self._client is None:
            raise StoreError("store is not connected")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> Store:
        if self._client is None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- keys -------------------------------------------------------------------------------------

    def _k(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _unk(self, raw: bytes) -> str:
        key = raw.decode()
        return key[len(self.prefix) :] if self.prefix and key.startswith(self.prefix) else key

    def _kv(self, item: Any) -> KV:
        return KV(
            key=self._unk(item.key),
            value=item.value,
            mod_revision=item.mod_revision,
            create_revision=item.create_revision,
            version=item.version,
            lease=item.lease,
        )

    # -- basic operations -------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        try:
            item = await self.client.get(self._k(key))
        except aetcd.ClientError as exc:
            raise StoreError(f"get {key}: {exc}") from exc
        return self._kv(item) if item is not None else None

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under ``prefix`` and the revision the answer reflects."""
        try:
            result = await self.client.get_prefix(self._k(prefix))
        except aetcd.ClientError as exc:
            raise StoreError(f"get_prefix {prefix}: {exc}") from exc
        revision = await self.revision() if not result else result.header.revision
        return [self._kv(item) for item in result], revision

    async def revision(self) -> int:
        """The cluster's current revision."""
        try:
            result = await self.client.get(self._k("/\0revision-probe"))
            if result is not None:
                return int(result.mod_revision)
            status = await self.client.get_range(self._k("/\0"), self._k("/\0\0"))
        except aetcd.ClientError as exc:
            raise StoreError(f"revision: {exc}") from exc
        return int(status.header.revision)

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        try:
            result = await self.client.put(self._k(key), _as_bytes(value), lease=lease or None)
        except aetcd.ClientError as exc:
            raise StoreError(f"put {key}: {exc}") from exc
        return int(result.header.revision)

    async def put_many(self, items: Iterable[tuple[str, bytes | str]], lease: int = 0) -> int:
        """Write several keys in one transaction (all or nothing); returns its revision."""
        ops = [Op("put", key, _as_bytes(value), lease) for key, value in items]
        return (await self.txn([], ops)).revision

    async def delete(self, key: str) -> bool:
        try:
            result = await self.client.delete(self._k(key))
        except aetcd.ClientError as exc:
            raise StoreError(f"delete {key}: {exc}") from exc
        return bool(result and result.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        try:
            result = await self.client.delete_prefix(self._k(prefix))
        except aetcd.ClientError as exc:
            raise StoreError(f"delete_prefix {prefix}: {exc}") from exc
        return int(result.deleted) if result else 0

    # -- transactions -----------------------------------------------------------------------------

    async def txn(self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None) -> TxnResult:
        client = self.client
        t = client.transactions

        def condition(c: Compare) -> Any:
            target = {"value": t.value, "version": t.version, "create": t.create, "mod": t.mod}[c.target]
            probe = target(self._k(c.key))
            value = _as_bytes(c.value) if isinstance(c.value, str | bytes) else c.value
            if c.op == "==":
                return probe == value
            if c.op == "!=":
                return probe != value
            if c.op == "<":
                return probe < value
            return probe > value

        def operation(op: Op) -> Any:
            if op.kind == "put":
                return t.put(self._k(op.key), op.value, lease=op.lease or None)
            if op.kind == "delete":
                return t.delete(self._k(op.key))
            if op.kind == "delete_prefix":
                key = self._k(op.key)
                return t.delete(key, range_end=aetcd.utils.prefix_range_end(key))
            return t.get(self._k(op.key))

        try:
            succeeded, responses = await client.transaction(
                compare=[condition(c) for c in compare],
                success=[operation(op) for op in success],
                failure=[operation(op) for op in failure or []],
            )
        except aetcd.ClientError as exc:
            raise StoreError(f"transaction: {exc}") from exc
        gets: list[KV | None] = []
        revision = 0
        for response in responses:
            if isinstance(response, list):
                gets.append(self._kv(response[0][1]) if response else None)
                if response:
                    revision = max(revision, int(response[0][1].header.revision))
            else:
                inner = getattr(response, response.WhichOneof("response"))
                revision = max(revision, int(inner.header.revision))
        if not revision:
            revision = await self.revision()
        return TxnResult(bool(succeeded), revision, gets)

    async def create(self, key: str, value: bytes | str, lease: int = 0) -> bool:
        """Write ``key`` only if it does not exist; ``True`` if this call created it."""
        result = await self.txn([Compare(key, "create", "==", 0)], [Op("put", key, _as_bytes(value), lease)])
        return result.succeeded

    async def compare_and_swap(self, key: str, mod_revision: int, value: bytes | str) -> bool:
        """Write ``key`` only if it was last modified at ``mod_revision`` (0: only if absent)."""
        target: Compare = (
            Compare(key, "create", "==", 0) if mod_revision == 0 else Compare(key, "mod", "==", mod_revision)
        )
        return (await self.txn([target], [Op("put", key, _as_bytes(value))])).succeeded

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

    def lease(self, ttl: int) -> Any:
        """An async context manager granting a lease kept alive by its own task (see lease.py)."""
        from pitrix.store.lease import KeptLease

        return KeptLease(self, ttl)

    def lock(self, name: str, ttl: int = 15) -> Any:
        """An async context manager holding the named lock (see lock.py)."""
        from pitrix.store.lock import Lock

        return Lock(self, name, ttl)

    def election(self, name: str, candidate: str, ttl: int = 15) -> Any:
        """A leader election among ``candidate`` ids (see lock.py)."""
        from pitrix.store.lock import Election

        return Election(self, name, candidate, ttl)
