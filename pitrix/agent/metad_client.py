"""HTTP client for metad's instance API, shared by the metad backend and the status reporter.

It fails over between the metadata cluster's nodes (sticking to the last one that answered) and
binds its outgoing sockets to the VM's own address: until mTLS lands metad identifies an instance
by its source address, and on loopback the kernel would otherwise pick 127.0.0.1 for every VM.

The nodes follow the metadata cluster's members: metad names the digest of its roster
(``pitrix.metad.roster``) on every answer, and when that is not the digest of the client's nodes
the client reads the list from the member that just answered and adopts it (in this node's own
order), if a member of it can be reached; ``roster_file`` keeps it for the next start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from pitrix.agent.certificate import AgentCertificate
from pitrix.agent.errors import AgentError, BackendError, BusyError, RejectedError
from pitrix.agent.httpclient import HttpClient, Response
from pitrix.agent.log import get_logger
from pitrix.agent.metad_roster import SavedRoster, load, save
from pitrix.metad import roster

T = TypeVar("T")
# Characters a path segment may hold as they are (RFC 3986 pchar); the rest are percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

VERSION_HEADER = "x-metad-version"  # as the client keys headers: lower-cased
_ACCEPT_JSON = {"Accept": "application/json"}
_SEND_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
ROSTER_HEADER = roster.HEADER.lower()
# After a roster that could not be read or adopted, the next try of that roster waits this long
# (seconds): not on every request while its members are unreachable.
ROSTER_RETRY = 30.0


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
        roster_file: Path | None = None,
    ) -> None:
        if not nodes:
            raise BackendError("metad: no nodes configured")
        self.nodes = [normalize_node(n) for n in nodes]
        self._current = 0
        # The deployed list, and the roster adopted over it (saved by an earlier run, if any).
        self._configured = list(self.nodes)
        self._roster_file = roster_file
        saved = load(roster_file, self._configured)
        if saved is not None:
            self.nodes = saved.nodes
        self.members_digest = roster.digest(self.nodes)  # what metad names when they are its members
        self._roster_heard = ""  # the digest the last answer named
        self._roster_handled = ""  # the digest of the last roster adopted (asked for once only)
        self._roster_busy = False
        # A roster that could not be read or adopted: its digest, and when to try it again.
        self._roster_refused = ("", 0.0)
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
            self._roster_heard = resp.headers.get(ROSTER_HEADER, "")
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

        answer = await self._failover(f"GET {path}", attempt)
        await self._follow_roster()
        return answer

    async def put(self, path: str, body: Any) -> None:
        """PUT ``body`` as JSON to ``path`` (status write-back)."""
        target = quote(path, safe=_PATH_SAFE)
        data = json.dumps(body).encode()

        async def attempt(http: HttpClient, base: str) -> None:
            resp = await http.request(
                "PUT", base, target, body=data, headers=_SEND_JSON, timeout=self._request_timeout
            )
            self._roster_heard = resp.headers.get(ROSTER_HEADER, "")
            _raise_for_status(resp)

        await self._failover(f"PUT {path}", attempt)
        await self._follow_roster()

    async def _follow_roster(self) -> None:
        """Adopt the roster the last answer named, if the nodes are other members.

        Never raises: the request that brought the news succeeded, and a roster that cannot be
        read now is tried again later (the nodes stay as they are meanwhile).
        """
        heard = self._roster_heard
        if not heard or heard in (self.members_digest, self._roster_handled) or self._roster_busy:
            return
        if heard == self._roster_refused[0] and time.monotonic() < self._roster_refused[1]:
            return
        self._roster_busy = True
        try:
            if await self._adopt_roster():
                self._roster_handled = heard
            else:
                self._roster_refused = (heard, time.monotonic() + ROSTER_RETRY)
        except (AgentError, OSError, TimeoutError, ValueError) as exc:
            self._log.warning("metad roster not read", error=str(exc))
            self._roster_refused = (heard, time.monotonic() + ROSTER_RETRY)
        finally:
            self._roster_busy = False

    async def _adopt_roster(self) -> bool:
        """Read the roster from the member that answered last and make it the nodes, turned by this
        node's ids and starting where the client is now (or at a member that answers)."""

        async def attempt(http: HttpClient, base: str) -> Any:
            resp = await http.request(
                "GET", base, roster.PATH, headers=_ACCEPT_JSON, timeout=self._request_timeout
            )
            _raise_for_status(resp)
            return json.loads(resp.body)

        body = await self._failover(f"GET {roster.PATH}", attempt)
        urls = body.get("urls") if isinstance(body, dict) else None
        if not roster.valid(urls):
            self._log.warning("metad roster ignored: not a list of URLs")
            return False
        assert isinstance(urls, list) and isinstance(body, dict)
        order = roster.rotated(
            [normalize_node(u) for u in urls], str(body.get("cluster_id", "")), str(body.get("node_id", ""))
        )
        here = self.nodes[self._current]
        current = order.index(here) if here in order else await self._reachable(order)
        if current is None:
            self._log.warning("metad roster not adopted: none of its members answers", nodes=order)
            return False
        changed = order != self.nodes
        self.nodes, self._current = order, current
        self.members_digest = roster.digest(order)
        if changed:
            if self._roster_file is not None:
                try:
                    await save(self._roster_file, SavedRoster(order, self._configured))
                except OSError as exc:  # kept in memory all the same; the next start uses the config
                    self._log.warning("metad roster not saved", path=str(self._roster_file), error=str(exc))
            self._log.info("metad roster adopted", nodes=order)
        return True

    async def _reachable(self, order: list[str]) -> int | None:
        """The index of the first of ``order`` whose metad answers, None if none does."""
        http = self._client_for_use()
        for index, base in enumerate(order):
            try:
                resp = await http.request("GET", base, "/healthz", timeout=self._request_timeout)
            except (TimeoutError, OSError, ValueError):
                continue
            if resp.status < 500:
                return index
        return None

    async def _failover(self, what: str, attempt: Callable[[HttpClient, str], Awaitable[T]]) -> T:
        await self.certificate.ensure(self.nodes, self._http)
        while len(self._retired) > 1:  # older than the previous certificate: nothing waits on it
            await self._retired.pop(0).close()
        http = self._client_for_use()
        errors: list[str] = []
        retry_after: float | None = None  # the longest any node that shed the request asked for
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
                if exc.retry_after is not None:
                    retry_after = max(retry_after or 0.0, exc.retry_after)
            except (TimeoutError, OSError, ValueError) as exc:
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
            else:
                # By URL, not index: the nodes may have been replaced (a roster adopted) meanwhile.
                if base != self.nodes[self._current % len(self.nodes)] and base in self.nodes:
                    self._log.info("metad failover", node=base)
                    self._current = self.nodes.index(base)
                return result
        if retry_after is not None:
            raise BusyError(f"metad: {what}: busy ({'; '.join(errors)})", retry_after)
        raise BackendError(f"metad: {what}: no node answered ({'; '.join(errors)})")


class NotServed(RejectedError):
    """metad answered 404 to a write: it has no such endpoint (Go metad has no ``/self/status``)."""


class _HTTPFailure(Exception):
    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text
        self.retry_after = retry_after


# The longest Retry-After honoured (seconds): a wrong or hostile header must not silence an
# agent for good; metad asks for at most 15.
MAX_RETRY_AFTER = 60.0


def retry_after(resp: Response) -> float | None:
    """A 503's ``Retry-After`` in seconds (the delay form; an HTTP date is not metad's), or None."""
    if resp.status != 503:
        return None
    raw = resp.headers.get("retry-after", "").strip()
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not seconds >= 0:  # NaN too
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _raise_for_status(resp: Response) -> None:
    if resp.status >= 400:
        raise _HTTPFailure(resp.status, resp.text()[:200], retry_after(resp))


def _version(resp: Response) -> int:
    raw = resp.headers.get(VERSION_HEADER, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


async def gather_answers(client: MetadClient, paths: list[str]) -> list[MetadAnswer]:
    """GET several paths concurrently."""
    return list(await asyncio.gather(*(client.get(p) for p in paths)))
