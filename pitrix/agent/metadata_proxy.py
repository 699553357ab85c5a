"""``http://metadata/`` on an AppCenter VM: plain HTTP in, the agent's own mTLS connection out.

AppCenter images read their metadata with ``curl http://metadata/self/...``: plain HTTP, no
certificate. metad knows an instance by its client certificate, so the agent, which holds this
VM's certificate, answers those requests itself and forwards each one over its own client. What
a caller can read is therefore exactly this VM's view, as metad decides it, and nothing more.

The trust boundary is the listening socket, so the proxy is narrow on purpose:

- only peers that are this VM answer: the listen address itself, or the loopback source
  address (127.0.0.1, ::1) that a local connection comes from; anyone else gets 403;
- only GET and HEAD (405 otherwise, with no body read: a request with a body gets 413);
- only origin-form targets (``/path?query``): an absolute URI (``GET http://elsewhere/``), ``.`` or
  ``..`` segments (encoded or not), control characters or a fragment get 400, so no request can
  name another host, climb out of the instance API or smuggle a header into the forwarded one;
- bounded: the request head (16 KiB, 64 headers), the target (4 KiB), the answer forwarded
  (8 MiB), concurrent requests (16) and concurrent long-polls (8; ``?wait=true`` holds a
  request open until the view changes): each one past the agent's two kept connections is a
  connection metad holds for this VM; and a request head must arrive within 10 s;
- one request per connection (``Connection: close``): what curl and the images' scripts send;
- a ``Host`` header must name ``metadata`` or the listen address (421 otherwise): no page whose
  name is rebound to the proxy's address reads it through a browser on the VM.

Forwarded: the path (re-quoted), the query as it came (long-polls included) and the ``Accept``
header when the caller sent one (none otherwise, so metad answers in its own default format).
Answered: metad's status, ``Content-Type``, ``X-Metad-Version`` and body, unchanged.

Loaded only in the appcenter profile (``Agent.run_forever``): its imports are not paid by
other agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import httptools

from pitrix.agent.errors import AgentError
from pitrix.agent.hostsfile import ensure_entry
from pitrix.agent.httpclient import HttpClient, Response
from pitrix.agent.log import get_logger
from pitrix.agent.metad_client import MetadClient
from pitrix.agent.profiles import LISTEN_OFF, parse_listen

if TYPE_CHECKING:
    from pitrix.agent.config import AgentConfig

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_TARGET = 4096
MAX_HEADER_VALUE = 512
MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_ACTIVE = 16
MAX_WAITS = 8
HEAD_TIMEOUT = 10.0
REQUEST_TIMEOUT = 15.0
WAIT_TIMEOUT = 330.0  # metad ends a long-poll well before (its own wait timeout)
HOST_NAME = "metadata"
# What a path segment keeps as it is when re-quoted for metad (RFC 3986 pchar).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_LOCAL_SOURCES = frozenset({"127.0.0.1", "::1"})


class Refused(Exception):
    """A request the proxy answers itself, with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Forward:
    """What goes to metad: the re-quoted target, the caller's Accept, and whether it long-polls."""

    target: str
    accept: str | None
    wait: bool


def _printable(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def check_request(method: str, url: bytes, headers: dict[str, str], listen_host: str = "") -> Forward:
    """The forwardable form of one request, or ``Refused``. Pure: the attack surface in one place.

    ``Host`` (when sent) must name the proxy (``metadata`` or its address, any port): a web page
    that rebinds its own name to the proxy's address would otherwise read the metadata through a
    browser running on the VM, as that browser sends the page's host name.
    """
    host = headers.get("host")
    if host is not None:
        name = host.strip().lower()
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        if name not in (HOST_NAME, listen_host):
            raise Refused(421, f"Host must be {HOST_NAME} or the proxy's address")
    if method not in ("GET", "HEAD"):
        raise Refused(405, f"{method} is not served: the metadata proxy is read-only")
    if headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers:
        raise Refused(413, "a metadata request has no body")
    if len(url) > MAX_TARGET:
        raise Refused(414, "request target too long")
    try:
        raw = url.decode("ascii")
    except UnicodeDecodeError:
        raise Refused(400, "request target is not ASCII") from None
    if not raw.startswith("/") or raw.startswith("//"):
        raise Refused(400, "only a path is served (no absolute URI, no other host)")
    if "#" in raw or not _printable(raw):
        raise Refused(400, "request target holds a fragment, a space or a control character")
    path_text, _, query = raw.partition("?")
    try:
        path = unquote_to_bytes(path_text).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "path is not UTF-8 once decoded") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or "\\" in path:
        raise Refused(400, "path holds a control character or a backslash")
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise Refused(400, "path holds a '.' or '..' segment")
    target = quote(
        "/" + "/".join(segments) + ("/" if path.endswith("/") and segments else ""), safe=_PATH_SAFE
    )
    wait = any(key in ("wait", "pre_version", "prev_version") for key, _ in parse_qsl(query, True))
    if query:
        target += "?" + query
    accept = headers.get("accept")
    if accept is not None:
        accept = accept.strip()
        if len(accept) > MAX_HEADER_VALUE or not all(0x20 <= ord(c) <= 0x7E for c in accept):
            raise Refused(400, "Accept header too long or not printable")
        accept = accept or None
    return Forward(target, accept, wait)


def peer_allowed(peer: str, listen_host: str) -> bool:
    """Whether a connection from ``peer`` comes from this VM: from the listen address itself, or
    from the loopback source address a local connection gets (on one host's loopback, as in the
    simulator, every process has that one: see docs/appcenter.md)."""
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr) == listen_host or str(addr) in _LOCAL_SOURCES


def _answer(
    status: int, body: bytes, content_type: str, *, head: bool, extra: dict[str, str] | None = None
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def _refusal(exc: Refused, head: bool) -> bytes:
    extra = {"Allow": "GET, HEAD"} if exc.status == 405 else None
    return _answer(
        exc.status, (exc.reason + "\n").encode(), "text/plain; charset=utf-8", head=head, extra=extra
    )


def _clean(value: str | None) -> str | None:
    if value is None or not all(0x20 <= ord(c) <= 0x7E for c in value) or len(value) > MAX_HEADER_VALUE:
        return None
    return value


class MetadataProxy:
    """The listening socket and its limits; requests go to metad through ``client``."""

    def __init__(self, client: MetadClient, host: str, port: int) -> None:
        self.client = client
        self.host = host
        self.port = port  # the bound port once started (port 0: an ephemeral one)
        self.active = 0
        self.waits = 0
        self.refused_peers = 0
        self._server: asyncio.Server | None = None
        self._log = get_logger("pitrix.agent.metadata_proxy", listen=f"{host}:{port}")

    async def start(self) -> None:
        """Listen; OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def forward(self, fwd: Forward) -> Response:
        """One GET to metad over the agent's own client (its certificate, its failover)."""
        headers = {"Accept": fwd.accept} if fwd.accept else None
        timeout = WAIT_TIMEOUT if fwd.wait else REQUEST_TIMEOUT

        async def attempt(http: HttpClient, base: str) -> Response:
            return await http.request("GET", base, fwd.target, headers=headers, timeout=timeout)

        # The client's own failover and certificate handling (renewal, bootstrap), as the agent's
        # reads use them; every status comes back as it is.
        return await self.client._failover(f"GET {fwd.target}", attempt)

    async def handle(self, method: str, url: bytes, headers: dict[str, str]) -> bytes:
        head = method == "HEAD"
        try:
            fwd = check_request(method, url, headers, self.host)
        except Refused as exc:
            self._log.info("request refused", method=method[:16], status=exc.status, reason=exc.reason)
            return _refusal(exc, head)
        if self.active >= MAX_ACTIVE or (fwd.wait and self.waits >= MAX_WAITS):
            return _refusal(Refused(503, "too many requests at once; try again"), head)
        self.active += 1
        self.waits += fwd.wait
        try:
            resp = await self.forward(fwd)
        except (AgentError, OSError, TimeoutError) as exc:
            self._log.warning("metad unreachable", error=str(exc))
            return _refusal(Refused(502, "metadata service unreachable"), head)
        finally:
            self.active -= 1
            self.waits -= fwd.wait
        if len(resp.body) > MAX_ANSWER_BYTES:
            return _refusal(Refused(502, "answer too large"), head)
        extra = {}
        version = _clean(resp.headers.get("x-metad-version"))
        if version:
            extra["X-Metad-Version"] = version
        content_type = _clean(resp.headers.get("content-type")) or "application/octet-stream"
        return _answer(resp.status, resp.body, content_type, head=head, extra=extra)


class _Connection(asyncio.Protocol):
    """One client connection: its request head parsed (bounded), answered once, closed."""

    def __init__(self, proxy: MetadataProxy) -> None:
        self._proxy = proxy
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._name = b""
        self._received = 0
        self._headers_done = False
        self._answered = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- transport ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are not asyncio.Transport subclasses: a stream transport either way.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if not peer or not peer_allowed(str(peer[0]), self._proxy.host):
            self._proxy.refused_peers += 1
            self._finish(_refusal(Refused(403, "metadata is served to this instance only"), False))
            return
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._answered or self._headers_done:
            return  # a body, or bytes after the request: not read
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            # A limit a callback enforced comes back wrapped in the parser's own error.
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, Refused):
                self._fail(cause.status, cause.reason)
            else:
                self._fail(400, "malformed request")
        if not self._headers_done and not self._answered and self._received > MAX_HEAD_BYTES:
            self._fail(431, "request head too large")

    def connection_lost(self, exc: Exception | None) -> None:
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # a caller gone mid long-poll frees its metad request

    # -- parser callbacks ----------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url.extend(url)
        if len(self._url) > MAX_TARGET:
            raise Refused(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise Refused(431, "too many headers")
        if len(name) + len(value) > MAX_HEAD_BYTES:
            raise Refused(431, "header too large")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._timer is not None:
            self._timer.cancel()
        method = self._parser.get_method().decode("latin-1")
        self._task = asyncio.ensure_future(self._respond(method))

    # -- answering -------------------------------------------------------------------------------

    async def _respond(self, method: str) -> None:
        try:
            answer = await self._proxy.handle(method, bytes(self._url), self._headers)
        except asyncio.CancelledError:
            return
        except Exception:  # a bug answers 500 for this request and leaves the proxy serving
            get_logger("pitrix.agent.metadata_proxy").exception("request failed unexpectedly")
            answer = _refusal(Refused(500, "internal error"), method == "HEAD")
        self._finish(answer)

    def _fail(self, status: int, reason: str) -> None:
        self._finish(_refusal(Refused(status, reason), False))

    def _too_slow(self) -> None:
        self._fail(408, "request head not received in time")

    def _finish(self, answer: bytes) -> None:
        if self._answered or self._transport is None:
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        self._transport.write(answer)
        self._transport.close()


async def serve(
    config: AgentConfig, client: MetadClient, *, started: asyncio.Future[MetadataProxy] | None = None
) -> None:
    """Run the proxy at ``config.metadata_listen`` and name it in the VM's /etc/hosts, until
    cancelled. A listen address that cannot be bound (port 80 without the privilege to bind it)
    is logged and the agent goes on without the proxy: its configuration work does not depend
    on it."""
    log = get_logger("pitrix.agent.metadata_proxy", listen=config.metadata_listen)
    if config.metadata_listen == LISTEN_OFF:
        return
    host, port = parse_listen(config.metadata_listen)
    proxy = MetadataProxy(client, host, port)
    try:
        await proxy.start()
    except OSError as exc:
        log.error(
            "metadata proxy not started: cannot listen",
            error=exc.strerror or str(exc),
            hint="ports below 1024 need root or CAP_NET_BIND_SERVICE; set metadata_listen",
        )
        if started is not None and not started.done():
            started.set_exception(exc)
        await asyncio.Event().wait()  # the agent runs on without it (cancelled at its stop)
        return
    try:
        try:
            written = await asyncio.to_thread(ensure_entry, Path(config.root), host, HOST_NAME)
        except OSError as exc:
            log.error("cannot name the proxy in /etc/hosts", error=exc.strerror or str(exc))
        else:
            if written:
                log.info("/etc/hosts names the metadata proxy", host=HOST_NAME, addr=host)
        log.info("metadata proxy listening", port=proxy.port)
        if started is not None and not started.done():
            started.set_result(proxy)
        await asyncio.Event().wait()
    finally:
        await proxy.close()
