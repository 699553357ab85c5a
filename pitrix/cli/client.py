"""A small async client for the admin API, shared by the CLI and the demo."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp


class ApiError(Exception):
    """The admin API answered with an error (``status``, ``code``, message)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        # Imported here, not with the module: the CLI imports ApiError for every command, and
        # aiohttp alone costs several times Python's own start.
        import aiohttp

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No connection limit: each /wait long-poll holds a connection until its cluster's job ends,
        # so a caller following more than aiohttp's default of 100 clusters at once (the orchestration
        # bench's 1,000) would leave every further request queued until it timed out.
        connector: aiohttp.BaseConnector
        if self.url.startswith("unix:"):
            connector = aiohttp.UnixConnector(path=self.url[len("unix:") :], limit=0)
            self.url = "http://localhost"
        else:
            connector = aiohttp.TCPConnector(limit=0)
        self.session = aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self, path: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The server-sent events at ``path`` as (event, data) until the server ends the stream.

        pitrixd sends a keepalive every 15 s, so a stream silent for three of them is a connection
        lost without a word (a host gone, a cable pulled): that raises ``ServerTimeoutError``.
        """
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_read=45.0)
        async with self.session.get(self.url + path, timeout=timeout) as response:
            if response.status >= 400:
                await self._raise(response)
            kind, data = "", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data = line[len("data:") :].strip()
                elif not line and kind:
                    yield kind, json.loads(data) if data else {}
                    kind, data = "", ""

    @staticmethod
    async def _raise(response: aiohttp.ClientResponse) -> None:
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
        raise ApiError(
            response.status,
            error.get("code", "error"),
            str(error.get("message", response.reason)),
            error.get("field"),
        )

    async def request(
        self, method: str, path: str, body: Any = None, *, wait_up_to: float | None = None, **params: Any
    ) -> Any:
        """``wait_up_to``: seconds for this request instead of the session's (a command run on a node)."""
        import aiohttp

        query = {k: str(v) for k, v in params.items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=wait_up_to) if wait_up_to else None
        async with self.session.request(
            method, self.url + path, json=body, params=query, timeout=timeout
        ) as response:
            if response.status >= 400:
                await self._raise(response)
            return await response.json(content_type=None) if response.content_length != 0 else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, **params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, body)
