"""The ``zookeeper`` backend: znodes read as confd's zookeeper backend reads them, watched with
ZooKeeper's own watches.

Key layout (confd's): a key names a znode; a znode without children is a value (its data), a
znode with children is a directory whose own data is not read. Unlike confd, a key whose znode
does not exist yet reads as empty (confd fails the whole read) and is watched for its creation.

Watching: every znode a read visits gets a data watch and a child watch, set by that same read,
so a change after the read always fires (ZooKeeper watches fire once; the next read sets them
again). A lost session drops the server's watches, so it counts as a change and the agent reads
again. kazoo is a threaded client: its calls run in a worker thread and its watch callbacks hand
over to the event loop. kazoo is imported here, inside the backend, so other agents never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import BackendError
from pitrix.agent.log import get_logger


def hosts(nodes: list[str]) -> str:
    """kazoo's connection string for confd's nodes (``host:port``, a scheme tolerated)."""
    out = []
    for node in nodes:
        address = node.split("://", 1)[-1].rstrip("/")
        if not address:
            raise BackendError(f"zookeeper backend: empty node {node!r}")
        out.append(address)
    return ",".join(out)


class ZookeeperBackend:
    """One kazoo session against the ensemble ``nodes`` name."""

    def __init__(self, nodes: list[str], connect_timeout: float = 10.0, watching: bool = True) -> None:
        if not nodes:
            raise BackendError("zookeeper backend: no nodes configured")
        self._hosts = hosts(nodes)
        self._connect_timeout = connect_timeout
        # Without -watch (-onetime, -interval) reads set no watches.
        self._watching = watching
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._events = 0  # watches fired (and sessions lost) since the backend started
        self._log = get_logger("pitrix.agent.zookeeper")
        self.revision = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> ZookeeperBackend:
        return cls(config.nodes, watching=config.watch)

    async def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        from kazoo.client import KazooClient

        self._loop = asyncio.get_running_loop()
        if self._changed is None:
            self._changed = asyncio.Condition()
        client = KazooClient(hosts=self._hosts, timeout=self._connect_timeout)
        client.add_listener(self._state_changed)
        try:
            await asyncio.to_thread(client.start, self._connect_timeout)
        except Exception as exc:  # kazoo's timeout, or a host it cannot resolve
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.stop)  # its connection thread keeps trying until stopped
                await asyncio.to_thread(client.close)
            raise BackendError(f"zookeeper: cannot connect to {self._hosts}: {exc}") from None
        self._client = client
        return client

    # Called on kazoo's threads.
    def _fired(self, event: Any = None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                asyncio.run_coroutine_threadsafe(self._bump(), loop)

    def _state_changed(self, state: Any) -> None:
        if state == "LOST":
            self._fired()

    async def _bump(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._events += 1
            self._changed.notify_all()

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        client = await self._connect()
        self.revision = self._events + 1
        try:
            return await asyncio.to_thread(self._read, client, keys)
        except BackendError:
            raise
        except Exception as exc:  # kazoo's connection and protocol errors
            raise BackendError(f"zookeeper: {type(exc).__name__}: {exc}") from None

    def _read(self, client: Any, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in keys:
            path = key.replace("/*", "") or "/"
            if len(path) > 1:
                path = path.rstrip("/")
            self._walk(client, path, out)
        return out

    def _walk(self, client: Any, path: str, out: dict[str, str]) -> None:
        from kazoo.exceptions import NoNodeError

        watch = self._fired if self._watching else None
        try:
            children = client.get_children(path, watch=watch)
            data, _ = client.get(path, watch=watch)
        except NoNodeError:
            # Gone or not there yet: watch for it to appear.
            if client.exists(path, watch=watch) is not None:
                self._fired()  # created between the two calls: read again
            return
        if not children:
            out[path] = data.decode("utf-8", "replace") if data else ""
            return
        for child in sorted(children):
            self._walk(client, ("" if path == "/" else path) + "/" + child, out)

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Wait until a watch set by the read that ``last_index`` names fires."""
        await self._connect()
        assert self._changed is not None
        if not self._watching:
            # The reads so far set no watches: from now on they do, and this first watch reports a
            # change so the caller reads (and so watches) again.
            self._watching = True
            return self._events + 2
        async with self._changed:
            await self._changed.wait_for(lambda: self._events + 1 > last_index)
            return self._events + 1

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.stop)
                await asyncio.to_thread(client.close)
