"""The host's view of an etcd cluster in simulator VMs, through etcd's own v3 HTTP (JSON) API.

What the e2e tests of examples/etcd-cluster believe about membership, leadership and data comes
from the members themselves, never from pitrix: a member list, a status, a put, a range.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CLIENT_PORT = 2379
PEER_PORT = 2380


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def client_url(ip: str) -> str:
    return f"http://{ip}:{CLIENT_PORT}"


def peer_url(ip: str) -> str:
    return f"http://{ip}:{PEER_PORT}"


class EtcdUnavailable(Exception):
    """A member did not answer, or answered with an error."""


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    peer_urls: tuple[str, ...]


class EtcdHttp:
    """Calls to one cluster's members by IP (each call names the member it asks)."""

    def __init__(self, http: aiohttp.ClientSession, timeout: float = 3.0) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(self, ip: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.http.post(f"{client_url(ip)}{path}", json=body, timeout=self.timeout) as reply:
                data = await reply.json(content_type=None)
                if reply.status != 200 or not isinstance(data, dict) or "error" in data:
                    raise EtcdUnavailable(f"{ip}{path}: {reply.status} {data}")
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EtcdUnavailable(f"{ip}{path}: {exc!r}") from exc

    async def members(self, ip: str) -> list[Member]:
        data = await self.call(ip, "/v3/cluster/member/list", {})
        return [
            Member(str(m["ID"]), m.get("name", ""), tuple(m.get("peerURLs", [])))
            for m in data.get("members", [])
        ]

    async def status(self, ip: str) -> dict[str, Any]:
        """``header.member_id`` (who answered) and ``leader`` (whom it follows)."""
        return await self.call(ip, "/v3/maintenance/status", {})

    async def healthy(self, ip: str) -> bool:
        try:
            async with self.http.get(f"{client_url(ip)}/health", timeout=self.timeout) as reply:
                data = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return isinstance(data, dict) and data.get("health") == "true"

    async def put(self, ip: str, key: str, value: str) -> int:
        data = await self.call(ip, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(data["header"]["revision"])

    async def get(self, ip: str, key: str) -> str | None:
        data = await self.call(ip, "/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return _text(kvs[0]["value"]) if kvs else None

    async def keys(self, ip: str, prefix: str) -> set[str]:
        """Every key under ``prefix``, by a linearizable read (the leader's committed state)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = await self.call(
            ip, "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True}
        )
        return {_text(kv["key"]) for kv in data.get("kvs") or []}


async def eventually(what: str, check: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """Ask ``check`` until it returns something truthy (an etcd that does not answer counts as not
    yet), or fail after ``deadline`` seconds naming ``what`` and the last thing seen."""
    last: Any = None
    end = time.monotonic() + deadline
    delay = 0.1
    while True:
        try:
            last = await check()
        except EtcdUnavailable as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:.0f}s; last: {last!r}")
        await asyncio.sleep(delay)  # polling a remote process: nothing here to wait on
        delay = min(delay * 2, 1.0)


@dataclass
class Writer:
    """Writes ``w/<n>`` keys one after another to whichever member answers, until stopped.

    ``acked`` holds the keys etcd acknowledged (a 200 with a revision: committed by a quorum);
    a write that failed or timed out is not counted and the next member is tried.
    """

    etcd: EtcdHttp
    ips: list[str]
    prefix: str = "w/"
    pace: float = 0.02
    acked: set[str] = field(default_factory=set)
    failed: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        targets = itertools.cycle(range(len(self.ips)))
        target = next(targets)
        for n in itertools.count():
            if self.stop.is_set():
                return
            key = f"{self.prefix}{n:07d}"
            try:
                await self.etcd.put(self.ips[target], key, str(n))
                self.acked.add(key)
            except EtcdUnavailable:
                self.failed += 1
                target = next(targets)
            await asyncio.sleep(self.pace)  # a steady rate, so the writer does not starve the VMs
