"""What a browser could forge is refused before any handler runs: unknown Host names, cross-site
Origins, non-JSON writes and bodies beyond the limit.

The default admin API is token-less on loopback, so any web page the operator opens could aim
requests at it. A page cannot choose the Host header its browser sends (a DNS-rebinding page sends
its own name), cannot hide the Origin of a write, and cannot send ``application/json`` cross-site
without a preflight this API never answers; checking those three closes the door whatever the
auth mode. The body limit stops a write before it is read, and keeps every record under what
etcd accepts in one request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from pitrix.api.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"
# What a browser sends cross-site without asking first (CORS "simple" requests): forms and text.
FORGEABLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` as (lower-case host without brackets, port), or None if it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None
    if not host or (port and not port.isdigit()):
        return None
    return host, int(port) if port else None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Guard:
    """The names this API answers to and the origins (besides its own) that may write to it."""

    hosts: frozenset[str]
    origins: frozenset[str]
    max_body: int

    @classmethod
    def build(
        cls, listen_host: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str], max_body: int
    ) -> Guard:
        hosts = {h.strip("[]").lower() for h in [listen_host, *allowed_hosts] if h}
        return cls(frozenset(hosts), frozenset(o.rstrip("/").lower() for o in allowed_origins), max_body)

    def host_allowed(self, host: str) -> bool:
        return _is_loopback(host) or host in self.hosts

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        """Same origin as the Host the request was sent to, or one configured."""
        origin = origin.strip().lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in DEFAULT_PORTS or parts.path or parts.query or not parts.netloc:
            return False
        target, ours = split_host(parts.netloc), split_host(host_header)
        if target is None or ours is None:
            return False
        default = DEFAULT_PORTS[parts.scheme]
        return (target[0], target[1] or default) == (ours[0], ours[1] or default)


def guard_middleware(guard: Guard) -> Middleware:
    @web.middleware
    async def refuse_forgeries(request: web.Request, handler: Handler) -> web.StreamResponse:
        host_header = request.headers.get(hdrs.HOST)
        # HTTP/1.0 clients may leave Host out; a browser never does, so its absence forges nothing.
        if host_header is not None:
            parsed = split_host(host_header)
            if parsed is None or not guard.host_allowed(parsed[0]):
                return error_response(
                    421,
                    "unknown_host",
                    f"Host: {host_header[:100]!r} is not a name this API answers to "
                    "(loopback names and addresses, the listen address, api.allowed_hosts)",
                    "Host",
                )
        origin = request.headers.get(hdrs.ORIGIN)
        # Checked on reads too: a stream or page fetched cross-site carries an Origin as well.
        if origin is not None and not guard.origin_allowed(origin, host_header or ""):
            return error_response(
                403,
                "cross_origin",
                f"Origin: {origin[:100]!r} may not use this API (same origin or api.allowed_origins)",
                "Origin",
            )
        if request.method not in SAFE_METHODS:
            length = request.content_length
            if length is not None and length > guard.max_body:
                return error_response(
                    413,
                    "too_large",
                    f"body: {length} bytes is over the limit of {guard.max_body} (api.max_body_bytes)",
                    "body",
                )
            has_body = bool(length) or request.headers.get(hdrs.TRANSFER_ENCODING) is not None
            given = request.headers.get(hdrs.CONTENT_TYPE)
            # A body must be JSON. A body-less action (aiohttp's client labels it octet-stream) may
            # not claim one of the types a form or a no-preflight fetch can send cross-site.
            if (has_body and request.content_type != JSON) or (
                not has_body and given is not None and request.content_type in FORGEABLE_TYPES
            ):
                return error_response(
                    415,
                    "unsupported_media_type",
                    f"Content-Type: writes must be {JSON}, not {(given or 'missing')[:100]!r}",
                    "Content-Type",
                )
        return await handler(request)

    return refuse_forgeries
