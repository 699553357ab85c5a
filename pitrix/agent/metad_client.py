"""HTTP client for metad's instance API, shared by the metad backend and the status reporter.

It fails over between the metadata cluster's nodes (sticking to the last one that answered) and
binds its outgoing sockets to the VM's own address: until mTLS lands metad identifies an instance
by its source address, and on loopback the kernel would otherwise pick 127.0.0.1 for every VM.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from pitrix.agent.certificate import AgentCertificate
from pitrix.agent.errors import BackendError, RejectedError
from pitrix.agent.httpclient import HttpClient, Response
from pitrix.agent.log import get_logger

T = TypeVar("T")
# Characters a path segment may hold as they are (RFC 3986 pchar); the rest are percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

VERSION_HEADER = "x-metad-version"  # as the client keys headers: lower-cased
_ACCEPT_JSON = {"Accept": "application/json"}
_SEND_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True)
class MetadAnswer:
    """A GET's body (decoded JSON, None for 404) and the revision it reflects."""

    body: Any
    version: int


def normalize_node(node: str) -> str:
    """confd accepts ``host:port``; the scheme defaults to http."""
    node = node.strip().rstrip("/")
    return node if "://" in node else f"http://{node}"


class MetadClient:
    """Requests against whichever metad node answers, in the configured order after the last good one."""

    def __init__(
        self,
        nodes: list[str],
        *,
        bind_address: str | None = None,
        request_timeout: float = 10.0,
        wait_timeout: float = 330.0,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        ca_file: Path | None = None,
        bootstrap_token: str = "",
        bootstrap_patience: float = 10.0,
    ) -> None:
        if not nodes:
            raise BackendError("metad: no nodes configured")
        self.nodes = [normalize_node(n) for n in nodes]
        self._current = 0
        self._bind_address = bind_address
        self._request_timeout = request_timeout
        self._wait_timeout = wait_timeout
        self.certificate = AgentCertificate(
            client_cert, client_key, ca_file, bootstrap_token, bind_address, bootstrap_patience
        )
        self._http: HttpClient | None = None
        self._http_generation = 0
        # Clients made with an older certificate: their held long-polls finish on them.
        self._retired: list[HttpClient] = []
        self._log = get_logger("pitrix.agent.metad", bind=bind_address)

    def _client_for_use(self) -> HttpClient:
        stale = self._http_generation != self.certificate.generation
        if self._http is not None and stale:
            self._retired.append(self._http)
            self._http = None
        if self._http is None or self._http.closed:
            self._http = HttpClient(ssl_context=self.certificate.context, local_address=self._bind_address)
            self._http_generation = self.certificate.generation
        return self._http

    async def close(self) -> None:
        for client in [*self._retired, self._http]:
            if client is not None:
                await client.close()
        self._retired.clear()
        self._http = None

    async def get(self, path: str, *, wait: bool = False, prev_version: int = 0) -> MetadAnswer:
        """GET ``path`` as JSON; with ``wait`` long-poll until the view changes after ``prev_version``."""
        target = quote(path, safe=_PATH_SAFE)
        if wait:
            target += "?" + urlencode({"wait": "true", "prev_version": prev_version})
        timeout = self._wait_timeout if wait else self._request_timeout

        async def attempt(http: HttpClient, base: str) -> MetadAnswer:
            resp = await http.request("GET", base, target, headers=_ACCEPT_JSON, timeout=timeout)
            version = _version(resp)
            if resp.status == 404:
                return MetadAnswer(None, version)
            _raise_for_status(resp)
            raw = resp.body
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise _HTTPFailure(resp.status, f"not JSON: {raw[:100]!r}") from None
            return MetadAnswer(body, version)

        return await self._failover(f"GET {path}", attempt)

    async def put(self, path: str, body: Any) -> None:
        """PUT ``body`` as JSON to ``path`` (status write-back)."""
        target = quote(path, safe=_PATH_SAFE)
        data = json.dumps(body).encode()

        async def attempt(http: HttpClient, base: str) -> None:
            resp = await http.request(
                "PUT", base, target, body=data, headers=_SEND_JSON, timeout=self._request_timeout
            )
            _raise_for_status(resp)

        await self._failover(f"PUT {path}", attempt)

    async def _failover(self, what: str, attempt: Callable[[HttpClient, str], Awaitable[T]]) -> T:
        await self.certificate.ensure(self.nodes, self._http)
        while len(self._retired) > 1:  # older than the previous certificate: nothing waits on it
            await self._retired.pop(0).close()
        http = self._client_for_use()
        errors: list[str] = []
        for step in range(len(self.nodes)):
            index = (self._current + step) % len(self.nodes)
            base = self.nodes[index]
            try:
                result = await attempt(http, base)
            except _HTTPFailure as exc:
                if exc.status == 404:
                    raise NotServed(f"metad {base}: {what}: HTTP 404: {exc.text}") from None
                if exc.status < 500:
                    # The node answered and refused: another node would say the same.
                    raise RejectedError(f"metad {base}: {what}: HTTP {exc.status}: {exc.text}") from None
                errors.append(f"{base}: HTTP {exc.status}")
            except (TimeoutError, OSError, ValueError) as exc:
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
            else:
                if index != self._current:
                    self._log.info("metad failover", node=base)
                    self._current = index
                return result
        raise BackendError(f"metad: {what}: no node answered ({'; '.join(errors)})")


class NotServed(RejectedError):
    """metad answered 404 to a write: it has no such endpoint (Go metad has no ``/self/status``)."""


class _HTTPFailure(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


def _raise_for_status(resp: Response) -> None:
    if resp.status >= 400:
        raise _HTTPFailure(resp.status, resp.text()[:200])


def _version(resp: Response) -> int:
    raw = resp.headers.get(VERSION_HEADER, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


async def gather_answers(client: MetadClient, paths: list[str]) -> list[MetadAnswer]:
    """GET several paths concurrently."""
    return list(await asyncio.gather(*(client.get(p) for p in paths)))
