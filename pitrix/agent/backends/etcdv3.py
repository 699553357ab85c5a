"""The ``etcdv3`` backend: keys read straight from etcd with prefix ranges, watched with etcd watches.

aetcd (and gRPC under it) is imported here, inside the backend, so an agent on the metad backend
never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any
from urllib.parse import urlsplit

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import BackendError
from pitrix.agent.log import get_logger


class EtcdBackend:
    """One aetcd client against the first node that connects."""

    def __init__(self, nodes: list[str], username: str = "", password: str = "") -> None:
        if not nodes:
            raise BackendError("etcdv3 backend: no nodes configured")
        self._nodes = nodes
        self._username = username or None
        self._password = password or None
        self._client: Any = None
        self._log = get_logger("pitrix.agent.etcdv3")
        self.revision = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> EtcdBackend:
        return cls(config.nodes, config.username, config.password)

    async def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        # gRPC's fork handlers, on by default, now and then crash a child forked while other
        # threads are inside gRPC (SIGSEGV before its exec: reload_cmd "exit status -11" in 1 of
        # 6 runs of bench/agent.py's burst under uvloop with aetcd busy; none in 12 with this
        # off). The agent forks for every check_cmd, reload_cmd and command. gRPC reads the
        # variable when it loads, which in the agent is here.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
        import aetcd

        errors = []
        for node in self._nodes:
            url = urlsplit(node if "://" in node else f"http://{node}")
            client = aetcd.Client(
                host=url.hostname or "127.0.0.1",
                port=url.port or 2379,
                username=self._username,
                password=self._password,
                timeout=10,
            )
            try:
                await client.connect()
                await client.status()
            except Exception as exc:  # aetcd raises several unrelated types for "cannot connect"
                errors.append(f"{node}: {exc}")
                with contextlib.suppress(Exception):
                    await client.close()
                continue
            self._client = client
            return client
        raise BackendError(f"etcdv3: no node answered ({'; '.join(errors)})")

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        client = await self._connect()
        out: dict[str, str] = {}
        revisions = []
        try:
            for key in keys:
                result = await client.get_prefix(key.encode())
                revisions.append(result.header.revision)
                for kv in result:
                    out[kv.key.decode()] = kv.value.decode("utf-8", "replace")
        except Exception as exc:
            await self._reset()
            raise BackendError(f"etcdv3: get: {exc}") from None
        if revisions:
            self.revision = min(revisions)
        return out

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Wait for the first event under ``prefix`` after ``last_index`` (etcd replays missed ones)."""
        client = await self._connect()
        if last_index <= 0:
            try:
                result = await client.get_prefix(prefix.encode() or b"/")
            except Exception as exc:
                await self._reset()
                raise BackendError(f"etcdv3: get: {exc}") from None
            return int(result.header.revision)
        try:
            watch = await client.watch_prefix(prefix.encode() or b"\0", start_revision=last_index + 1)
            try:
                async for event in watch:
                    revision = int(event.kv.mod_revision)
                    if any(event.kv.key.decode().startswith(k) for k in keys) or not keys:
                        return revision
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(watch.cancel())
        except BackendError:
            raise
        except Exception as exc:
            import aetcd

            if isinstance(exc, aetcd.RevisionCompactedError):
                # History from last_index is gone: report a change, so the caller re-reads the
                # whole state (which is what it would have learned from the lost events).
                self._log.info("watch start compacted; re-reading", compacted=exc.compacted_revision)
                return max(int(exc.compacted_revision), last_index + 1)
            await self._reset()
            raise BackendError(f"etcdv3: watch: {exc}") from None
        raise BackendError("etcdv3: watch ended")

    async def close(self) -> None:
        await self._reset()
