"""The management client pitrixd uses to drive a metad (never etcd directly).

``watch`` survives dropped connections and metad restarts: it reconnects with backoff and resumes
after the last revision it delivered, and it only moves past a resync once the whole state
arrived, so a stream cut in the middle of a resync is resynced again rather than half-applied.
"""

from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.logs import get_logger

_NO_BODY: Any = object()
# How long a request keeps asking a metad that answers 503 (its etcd did not answer within its
# store's deadline, or its issuer is still bootstrapping). A metadata VM starved of CPU answers
# 503 for seconds at a time while its etcd is fine; failing the step on the first one failed
# whole creates (register, bootstrap-agents, start) that the next attempt would have finished.
UNAVAILABLE_PATIENCE = 60.0


class MetadClientError(Exception):
    """metad refused a request (4xx) or answered something that is not its protocol."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"metad {status}: {message}")
        self.status = status


class MetadManagementClient:
    """pitrixd's side of the management API.

    Over HTTPS give ``ssl`` (a client context presenting the runtime's certificate), or the
    ``ca_file``/``cert_file``/``key_file`` paths to build one.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 30.0,
        idle_timeout: float = 35.0,
        max_backoff: float = 5.0,
        unavailable_patience: float = UNAVAILABLE_PATIENCE,
        ssl: ssl_module.SSLContext | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        if ssl is None and ca_file is not None:
            try:
                ssl = pki.client_context(ca_file, cert_file, key_file)
            except pki.PKIError as exc:
                raise MetadClientError(0, str(exc)) from None
        self._ssl = ssl
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # metad writes a keepalive line every 10 s by default; silence for longer means a dead link.
        self._idle_timeout = idle_timeout
        self._max_backoff = max_backoff
        self._unavailable_patience = unavailable_patience
        self.unavailable_retries = 0  # 503s answered and asked again
        self.unavailable_seen = asyncio.Event()  # set at the first of them (for whoever waits on it)
        self._log = get_logger("pitrix.metad.client", url=self.base_url)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection limit: every ``watch`` holds a connection for as long as it follows (the
            # runtime keeps one per cluster it works on), so aiohttp's default of 100 let 100 clusters
            # at work starve every other request of the runtime until its timeout.
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=0)
            self._session = aiohttp.ClientSession(connector=connector)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> MetadManagementClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def _path(path: str) -> str:
        return quote("/".join(part for part in path.split("/") if part), safe="/")

    async def _request(self, method: str, url: str, obj: Any = _NO_BODY, allow_404: bool = False) -> Any:
        """One request, asked again with backoff while metad answers 503, up to the patience.

        Every management request is safe to repeat: reads, puts that merge or replace, deletes,
        revocations; a 503 says the store did not answer, so the write may or may not have landed,
        and writing the same document again leaves the same state.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._unavailable_patience
        backoff = Backoff(0.2, self._max_backoff)
        while True:
            try:
                return await self._attempt(method, url, obj, allow_404)
            except MetadClientError as exc:
                delay = backoff.next()
                if exc.status != 503 or loop.time() + delay >= deadline:
                    raise
                self.unavailable_retries += 1
                self.unavailable_seen.set()
                self._log.info(
                    "metad unavailable; asking again",
                    method=method,
                    path=url,
                    error=str(exc),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _attempt(self, method: str, url: str, obj: Any, allow_404: bool) -> Any:
        """One try of a request: one metad asked once (a cluster of several: each member in turn)."""
        return await self._request_once(method, url, obj, allow_404)

    async def _request_once(self, method: str, url: str, obj: Any, allow_404: bool) -> Any:
        kwargs: dict[str, Any] = {"timeout": self._timeout}
        if obj is not _NO_BODY:
            kwargs["data"] = json.dumps(obj)
            kwargs["headers"] = {"Content-Type": "application/json"}
        async with self.session.request(method, self.base_url + url, **kwargs) as response:
            text = await response.text()
            if response.status == 404 and allow_404:
                return None
            if response.status >= 400:
                try:
                    message = json.loads(text).get("error", text)
                except (ValueError, AttributeError):
                    message = text
                raise MetadClientError(response.status, str(message))
            try:
                return json.loads(text) if text else None
            except ValueError as exc:
                raise MetadClientError(response.status, f"answer is not JSON: {text[:200]!r}") from exc

    async def healthz(self) -> dict[str, Any]:
        # Asked once (each member once, for a cluster of several): a 503 here is the answer (metad
        # says it is not healthy), not a busy store to wait out.
        result = await self._attempt("GET", "/healthz", _NO_BODY, False)
        return result if isinstance(result, dict) else {}

    # -- data -------------------------------------------------------------------------------------

    async def get_data(self, path: str) -> Any:
        """The subtree at ``path`` as nested JSON (a leaf as its string); None if absent."""
        return await self._request("GET", f"/v1/data/{self._path(path)}", allow_404=True)

    async def put_data(self, path: str, obj: Any) -> int:
        """Merge ``obj`` into ``path`` atomically; returns the revision of the write."""
        return int((await self._request("PUT", f"/v1/data/{self._path(path)}", obj))["revision"])

    async def post_data(self, path: str, obj: Any) -> int:
        """Replace the subtree at ``path`` with ``obj`` atomically; returns the revision."""
        return int((await self._request("POST", f"/v1/data/{self._path(path)}", obj))["revision"])

    async def delete_data(self, path: str) -> int:
        return int((await self._request("DELETE", f"/v1/data/{self._path(path)}"))["revision"])

    # -- mappings ---------------------------------------------------------------------------------

    async def get_mapping(self, iid: str) -> dict[str, Any] | None:
        result = await self._request("GET", f"/v1/mapping/{quote(iid, safe='')}", allow_404=True)
        return result if isinstance(result, dict) else None

    async def put_mapping(self, iid: str, mapping: dict[str, Any]) -> int:
        return int((await self._request("PUT", f"/v1/mapping/{quote(iid, safe='')}", mapping))["revision"])

    async def delete_mapping(self, iid: str) -> int:
        return int((await self._request("DELETE", f"/v1/mapping/{quote(iid, safe='')}"))["revision"])

    # -- revocation -------------------------------------------------------------------------------

    async def revoke_instance(self, iid: str, reason: str = "") -> int:
        """Refuse every certificate naming ``iid`` from now on; its held long-polls are closed."""
        body = {"reason": reason} if reason else {}
        path = f"/v1/revoked-instances/{quote(iid, safe='')}"
        return int((await self._request("PUT", path, body))["revision"])

    async def revoked(self) -> dict[str, list[str]]:
        """``{"serials": [...], "instances": [...]}``: every identity metad refuses."""
        result = await self._request("GET", "/v1/revoked")
        return result if isinstance(result, dict) else {}

    # -- etcd membership --------------------------------------------------------------------------

    async def etcd_members(self) -> dict[str, Any]:
        """``{"members": [{id, name, peer_urls, client_urls, started, leader, local}], "leader",
        "local"}``: the metadata cluster's etcd members as the answering metad's member sees them.
        A 503 (``MetadClientError.status``) means etcd cannot answer now: ask again."""
        result = await self._request("GET", "/v1/etcd/members")
        return result if isinstance(result, dict) else {}

    async def etcd_member_remove(self, name: str = "", peer_url: str = "") -> bool:
        """Remove a lost member by name or peer URL; False if it was not listed (done already)."""
        if peer_url:
            path = "/v1/etcd/members?" + urlencode({"peer_url": peer_url})
        else:
            path = f"/v1/etcd/members/{quote(name, safe='')}"
        return bool((await self._request("DELETE", path))["removed"])

    async def etcd_member_add(self, name: str, peer_url: str) -> dict[str, str]:
        """Add a member at ``peer_url``; the members' list (name → peer URL) it joins as
        ``existing``, itself under ``name``. Adding a URL already listed changes nothing."""
        result = await self._request("POST", "/v1/etcd/members", {"name": name, "peer_url": peer_url})
        return {str(k): str(v) for k, v in result["members"].items()}

    async def etcd_peer_setup(self) -> dict[str, Any]:
        """``{"member", "peer_url", "csr"?}``: which member this metad's etcd is (``""``: a single
        member, then with the CSR of the peer key it made for the move to the peers' TLS)."""
        result = await self._request("GET", "/v1/etcd/peer-setup")
        return result if isinstance(result, dict) else {}

    async def etcd_peer_adopt(
        self, name: str, peers_ca_pem: bytes, cert_pem: bytes, cluster_token: str, peer_cn: str
    ) -> dict[str, Any]:
        """Move this single member's etcd to the peers' mutual TLS as member ``name`` (it restarts,
        data kept); ``restarted`` False when it was that member already."""
        body = {
            "name": name,
            "peers_ca": peers_ca_pem.decode(),
            "peer_certificate": cert_pem.decode(),
            "cluster_token": cluster_token,
            "peer_cn": peer_cn,
        }
        result = await self._request("POST", "/v1/etcd/peer-setup", body)
        return result if isinstance(result, dict) else {}

    # -- watch ------------------------------------------------------------------------------------

    async def watch(
        self, prefix: str = "/", from_revision: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events under ``prefix`` from ``from_revision`` on (None: from now), forever.

        Yields metad's event dicts: ``put``/``delete`` with ``revision``, ``key``, ``value``, and
        ``resync`` (with ``revision`` and ``count``) followed by ``count`` ``put`` events of the
        full state, after which the consumer's copy must equal that state.
        """
        next_from = from_revision
        backoff = Backoff(0.1, self._max_backoff)
        while True:
            if next_from is None:
                # Pin "now" to a revision so that a drop before the first event loses nothing.
                try:
                    next_from = int((await self.healthz())["revision"]) + 1
                except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, MetadClientError) as exc:
                    delay = backoff.next()
                    self._log.info("metad unreachable; retrying", error=str(exc), retry_in=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
            params = {"prefix": prefix}
            if next_from is not None:
                params["from_revision"] = str(next_from)
            resync_left = 0
            resync_revision = 0
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_read=self._idle_timeout)
                async with self.session.get(
                    self.base_url + "/v1/watch", params=params, timeout=timeout
                ) as resp:
                    if 400 <= resp.status < 500:
                        raise MetadClientError(resp.status, (await resp.text())[:500])
                    if resp.status >= 500:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    backoff.reset()
                    async for raw in resp.content:
                        line = raw.strip()
                        if not line:
                            continue
                        event = json.loads(line)
                        kind = event.get("type")
                        if kind == "resync":
                            resync_left = int(event.get("count", 0))
                            resync_revision = int(event["revision"])
                            yield event
                            if resync_left == 0:
                                next_from = resync_revision + 1
                            continue
                        yield event
                        if resync_left:
                            resync_left -= 1
                            if resync_left == 0:
                                next_from = resync_revision + 1
                        else:
                            next_from = max(next_from or 0, int(event["revision"]) + 1)
            except MetadClientError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, ConnectionError) as exc:
                interruption = str(exc) or type(exc).__name__
            else:
                interruption = "stream ended"
            delay = backoff.next()
            self._log.info(
                "watch interrupted; resuming",
                error=interruption,
                from_revision=next_from,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)


class FailoverManagementClient(MetadManagementClient):
    """The management API of a metadata cluster of several: another member when one cannot be
    reached (its VM lost), sticking to the last that answered.

    A connection that could not be made moves on (nothing was sent), and so does a 503: that
    member's own etcd could not be reached or did not answer in time (restarting, or its cluster
    electing a leader), while another member's may. The request may then reach etcd twice, which
    every management request allows: a write merges, replaces or deletes the same document again,
    a membership change finds itself done. Any other answer, even an error, is the answer.
    ``watch`` reconnects to whichever member is current.
    """

    def __init__(self, base_urls: list[str], **kwargs: Any) -> None:
        if not base_urls:
            raise ValueError("base_urls: at least one member's management URL is needed")
        super().__init__(base_urls[0], **kwargs)
        self.base_urls = [url.rstrip("/") for url in base_urls]

    async def _attempt(self, method: str, url: str, obj: Any, allow_404: bool) -> Any:
        """Every member once, from the current one; the patience with 503s (``_request``) is
        spent over whole rounds, so a member whose etcd is away is passed at once."""
        start = self.base_urls.index(self.base_url) if self.base_url in self.base_urls else 0
        unreachable: list[str] = []
        for step in range(len(self.base_urls)):
            self.base_url = self.base_urls[(start + step) % len(self.base_urls)]
            try:
                result = await self._request_once(method, url, obj, allow_404)
            except aiohttp.ClientConnectorError:
                if step == len(self.base_urls) - 1:
                    raise
                unreachable.append(self.base_url)
                continue
            except MetadClientError as exc:
                if exc.status != 503 or step == len(self.base_urls) - 1:
                    raise
                unreachable.append(self.base_url)
                continue
            if unreachable:  # said once another answered (while none does, the caller's error says it)
                self._log.warning("metadata member unreachable; another answered", unreachable=unreachable)
            return result
        raise AssertionError("unreachable: the last member's failure is raised")
