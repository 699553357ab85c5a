"""A small async client for the admin API, shared by the CLI and the demo."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from pitrix.cli.httpcore import HttpCore, Response

# pitrixd sends a keepalive every 15 s on an event stream: three missed is a connection lost.
EVENTS_READ_TIMEOUT = 45.0


class ApiError(Exception):
    """The admin API answered with an error (``status``, ``code``, message)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class ApiClient:
    """Requests to pitrixd at ``url`` (``http://``, ``https://`` or ``unix:/path``).

    Connections are not limited: each /wait long-poll holds one until its cluster's job ends, and a
    caller may follow a thousand clusters at once (the orchestration bench). Failures to reach
    pitrixd raise ``pitrix.cli.httpcore.HttpConnectionError`` (also importable from
    ``pitrix.cli.http``), an answer cut short ``HttpPayloadError``, a request past its time
    ``TimeoutError``.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 120.0, *, blocking: bool = False
    ) -> None:
        """``blocking``: on plain sockets, each request blocking until answered, for a command run
        without an event loop (``pitrix.cli.blocking.run_blocking``); else on asyncio streams."""
        # Imported here, not with the module: the CLI imports ApiError for every command, and a
        # command's cheap paths (--help, a usage error) need no HTTP client at all.
        self.url = url.rstrip("/")
        self.token = token  # for the one command that speaks WebSocket (pitrix/cli/node_ssh.py)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.http: HttpCore
        if blocking:
            from pitrix.cli.blocking import BlockingHttpClient

            self.http = BlockingHttpClient(self.url, headers)
        else:
            from pitrix.cli.http import HttpClient

            self.http = HttpClient(self.url, headers)

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self, path: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The server-sent events at ``path`` as (event, data) until the server ends the stream.

        pitrixd sends a keepalive every 15 s, so a stream silent for three of them is a connection
        lost without a word (a host gone, a cable pulled): that raises ``HttpReadTimeout``.
        """
        from pitrix.cli.httpcore import Response

        stream = self.http.stream(
            "GET", path, read_timeout=EVENTS_READ_TIMEOUT, headers={"Accept": "text/event-stream"}
        )
        try:
            head = await anext(stream)
            assert isinstance(head, Response)
            if head.status >= 400:
                body = b"".join([chunk async for chunk in stream if isinstance(chunk, bytes)])
                self._raise(Response(head.status, head.reason, head.headers, body))
            kind, data, pending = "", "", b""
            async for chunk in stream:
                assert isinstance(chunk, bytes)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode().rstrip("\r")
                    if line.startswith("event:"):
                        kind = line[len("event:") :].strip()
                    elif line.startswith("data:"):
                        data = line[len("data:") :].strip()
                    elif not line and kind:
                        yield kind, json.loads(data) if data else {}
                        kind, data = "", ""
        finally:
            await stream.aclose()

    @staticmethod
    def _raise(response: Response) -> None:
        try:
            data = json.loads(response.body)
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
        """``wait_up_to``: seconds for this request instead of the client's (a command run on a node)."""
        query = urlencode({k: str(v) for k, v in params.items() if v is not None})
        target = path + ("&" if "?" in path else "?") + query if query else path
        headers = None
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
        response = await self.http.request(
            method, target, body=payload, headers=headers, timeout=wait_up_to or self.timeout
        )
        if response.status >= 400:
            self._raise(response)
        return json.loads(response.body) if response.body else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, **params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, body)
