"""A minimal RESP2 client over asyncio streams: enough for the Redis example's e2e test.

The test talks to Redis and Sentinel from the host as any client would; this avoids a Python
Redis library as a dependency, and redis-cli subprocesses would cost a process per write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

Reply = str | int | bytes | list[Any] | None
T = TypeVar("T")


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-NOAUTH ...``, ``-READONLY ...``): the text is the message."""


class Resp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, password: str | None = None, timeout: float = 5) -> Resp:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        client = cls(reader, writer)
        if password is not None:
            try:
                await client.call("AUTH", password, timeout=timeout)
            except BaseException:
                await client.close()
                raise
        return client

    async def call(self, *args: str | int | bytes, timeout: float = 5) -> Reply:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.writer.write(b"".join(parts))
        await self.writer.drain()
        return await asyncio.wait_for(self._reply(), timeout)

    async def _reply(self) -> Reply:
        line = await self.reader.readuntil(b"\r\n")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise RespError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = await self.reader.readexactly(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(body)
            if count < 0:
                return None
            return [await self._reply() for _ in range(count)]
        raise RespError(f"unexpected reply {line!r}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def command(host: str, port: int, password: str | None, *args: str | int) -> Reply:
    """One command on a connection of its own."""
    client = await Resp.connect(host, port, password)
    try:
        return await client.call(*args)
    finally:
        await client.close()


def info(text: bytes) -> dict[str, str]:
    """An INFO answer as a mapping of its ``name:value`` lines."""
    fields = {}
    for line in text.decode().splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[name] = value
    return fields


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, every: float = 0.2
) -> T:
    """Ask ``probe`` until it answers something other than None (or an error), within ``timeout``.

    Redis offers no event to wait on for a replica's sync or a Sentinel's view: polling with a
    deadline is the only way to wait on those conditions.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            answer = await probe()
        except (OSError, RespError, TimeoutError, asyncio.IncompleteReadError) as exc:
            answer, last = None, exc
        if answer is not None:
            return answer
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last error: {last!r})")
        await asyncio.sleep(every)
