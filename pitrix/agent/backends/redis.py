"""The ``redis`` backend: keys read as confd's redis backend reads them, watched through Redis's
keyspace notifications.

Key layout (confd's): a key is a Redis key named by its path (``/database/host``), or, with
``-separator ':'``, by its path without the leading ``/`` and with ``/`` replaced
(``database:host``). A key holding a string is that value; a key holding a hash gives one value
per field (``/database`` with field ``host`` is ``/database/host``); otherwise every string key
matching ``<key>/*`` (``<key><separator>*``) is read. A node is ``host:port``, ``host:port/db`` or
a Unix socket path, tried in order.

Watching needs the server's ``notify-keyspace-events`` to publish keyspace events (``KA`` does),
as confd's backend does; the agent says so once when they are off. Redis has no revision, so the
backend counts the notifications it heard: the subscription is made before the first read, and a
read records the count it started at, so a write that lands between a read and the next watch is
never missed. redis-py is imported here, inside the backend, so other agents never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import BackendError
from pitrix.agent.log import get_logger

# The keyspace events confd's backend treats as a change, and "expired" (a key going away on its
# own is a change to the rendered file just as a DEL is).
CHANGE_EVENTS = frozenset(
    {
        "del",
        "append",
        "rename_from",
        "rename_to",
        "expire",
        "expired",
        "set",
        "incrby",
        "incrbyfloat",
        "hset",
        "hincrby",
        "hincrbyfloat",
        "hdel",
    }
)
SCAN_COUNT = 1000


def parse_node(node: str) -> dict[str, Any]:
    """redis-py connection arguments for one confd node (``host:port[/db]`` or a socket path)."""
    address, db = node, 0
    head, slash, tail = node.rpartition("/")
    if slash and tail.isdigit():
        address, db = head, int(tail)
    if os.path.exists(address):
        return {"unix_socket_path": address, "db": db}
    host, colon, port = address.rpartition(":")
    if not colon:
        host, port = address, "6379"
    if not port.isdigit():
        raise BackendError(f"redis backend: node {node!r}: expected host:port[/db] or a socket path")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port), "db": db}


class RedisBackend:
    """One command connection and one pub/sub connection to the first node that answers."""

    def __init__(
        self, nodes: list[str], password: str = "", separator: str = "", watching: bool = True
    ) -> None:
        if not nodes:
            raise BackendError("redis backend: no nodes configured")
        self._nodes = [parse_node(n) for n in nodes]
        self._names = list(nodes)
        self._password = password or None
        self._separator = separator or "/"
        # Without -watch (-onetime, -interval) nothing subscribes: no second connection, no
        # warning about notifications nobody waits for.
        self._watching = watching
        self._client: Any = None
        self._db = 0
        self._log = get_logger("pitrix.agent.redis")
        # Notifications heard since the subscription started; -1 while none is running.
        self._events = -1
        self._changed: asyncio.Condition | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listener_error = ""
        # Only events on keys under the watched prefix count (the Redis name, as transformed).
        self._watched = ""
        self.revision = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> RedisBackend:
        return cls(config.nodes, config.password, config.separator, watching=config.watch)

    # -- keys as confd names them ----------------------------------------------------------------

    def transform(self, key: str) -> str:
        """A path as the Redis key confd looks up: ``/a/b`` -> ``a:b`` with separator ``:``."""
        if self._separator == "/":
            return key
        return key.lstrip("/").replace("/", self._separator)

    def clean(self, name: str) -> str:
        """A Redis key back to a path."""
        path = name if name.startswith("/") else "/" + name
        return path.replace(self._separator, "/")

    # -- connections -----------------------------------------------------------------------------

    async def _open(self, *, timeout: float | None) -> tuple[Any, int]:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        errors = []
        for name, args in zip(self._names, self._nodes, strict=True):
            client = aioredis.Redis(
                **args,
                password=self._password,
                socket_connect_timeout=1.0,
                socket_timeout=timeout,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),  # the agent retries a round with its own backoff
            )
            try:
                await client.ping()
            except Exception as exc:  # redis-py raises several types for "cannot connect"
                errors.append(f"{name}: {exc}")
                with contextlib.suppress(Exception):
                    await client.aclose()
                continue
            return client, int(args["db"])
        raise BackendError(f"redis: no node answered ({'; '.join(errors)})")

    async def _connect(self) -> Any:
        if self._client is None:
            self._client, self._db = await self._open(timeout=5.0)
        return self._client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- reads -----------------------------------------------------------------------------------

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        if self._watching:
            await self._ensure_listener()
        self.revision = max(self._events, 0) + 1
        client = await self._connect()
        try:
            return await self._read(client, keys)
        except BackendError:
            raise
        except Exception as exc:
            await self._drop_client()
            raise BackendError(f"redis: {exc}") from None

    async def _read(self, client: Any, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in keys:
            key = key.replace("/*", "")
            name = self.transform(key)
            kind = await client.type(name)
            if kind == "string":
                value = await client.get(name)
                if value is not None:
                    out[key] = value
                continue
            if kind == "hash":
                async for field, value in client.hscan_iter(name, match="*", count=SCAN_COUNT):
                    out[self.clean(f"{name}/{field}")] = value
                continue
            below = "/*" if self._separator == "/" else self._separator + "*"
            pattern = "*" if key == "/" else name + below
            async for found in client.scan_iter(match=pattern, count=SCAN_COUNT):
                with contextlib.suppress(Exception):  # not a string (a hash, a list): skipped, as confd
                    value = await client.get(found)
                    if value is not None:
                        out[self.clean(found)] = value
        return out

    # -- watching --------------------------------------------------------------------------------

    async def _ensure_listener(self) -> None:
        """Subscribe to the database's keyspace events unless subscribed already."""
        if self._listener is not None and not self._listener.done():
            return
        await self._stop_listener()
        if self._changed is None:
            self._changed = asyncio.Condition()
        client, db = await self._open(timeout=None)
        pubsub = client.pubsub()
        channel = f"__keyspace@{db}__:"
        try:
            await pubsub.psubscribe(channel + "*")
            # The subscription is confirmed before anything is read, so no write is missed.
            while (await pubsub.get_message(timeout=5.0)) is None:
                pass
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await client.aclose()
            raise BackendError(f"redis: subscribe: {exc}") from None
        await self._warn_if_notifications_off(client)
        self._events = max(self._events, 0)
        self._listener_error = ""
        self._listener = asyncio.create_task(self._listen(client, pubsub, channel), name="redis-keyspace")

    async def _warn_if_notifications_off(self, client: Any) -> None:
        try:
            setting = (await client.config_get("notify-keyspace-events")).get("notify-keyspace-events", "")
        except Exception:  # CONFIG may be renamed or refused: then the operator knows best
            return
        if "K" not in setting or not ({"A", "g", "$", "h"} & set(setting)):
            self._log.warning(
                "redis keyspace notifications are off: -watch sees no change"
                " (set notify-keyspace-events to KA, or use -interval)",
                notify_keyspace_events=setting,
            )

    async def _listen(self, client: Any, pubsub: Any, channel: str) -> None:
        assert self._changed is not None
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None or message.get("data") not in CHANGE_EVENTS:
                    continue
                if not str(message.get("channel", "")).removeprefix(channel).startswith(self._watched):
                    continue
                async with self._changed:
                    self._events += 1
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            async with self._changed:
                self._listener_error = str(exc) or type(exc).__name__
                self._changed.notify_all()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await client.aclose()

    async def _stop_listener(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Wait for a keyspace event after the read that ``last_index`` names.

        A lost subscription is a failure; the watch after it subscribes again and reports a change,
        as events may have been missed in between (as does a first watch without a subscription).
        """
        self._watched = "" if prefix in ("", "/") else self.transform(prefix)
        self._watching = True
        if self._listener is None or self._listener.done():
            # Not subscribed (yet, or any more): events may have gone unheard since the last read.
            await self._ensure_listener()
            return max(self._events, 0) + 2
        assert self._changed is not None and self._listener is not None
        async with self._changed:
            await self._changed.wait_for(lambda: self._events + 1 > last_index or bool(self._listener_error))
            if self._events + 1 > last_index:
                return self._events + 1
            error = self._listener_error
        raise BackendError(f"redis: keyspace subscription lost: {error}")

    async def close(self) -> None:
        await self._stop_listener()
        await self._drop_client()
