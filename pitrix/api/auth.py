"""Who is asking: bearer tokens map to owners; an owner only ever sees its own clusters.

A cluster of another owner answers 404, not 403, so a token cannot probe which ids exist. Requests
without a token are refused (401) unless the listener is trusted as a whole: a unix socket, whose
file permissions decide who connects, or auth explicitly disabled on a loopback address.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import TypeAdapter, ValidationError

from pitrix.api.errors import error_response
from pitrix.logs import get_logger
from pitrix.settings import ApiSettings, ConfigError, TokenEntry, read_toml

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths anyone may read: probes and the API's own description carry nothing about owners.
# ``/metrics`` is not one of them: its series name every owner's clusters, nodes and app values,
# so with tokens configured it takes an admin token (Prometheus sends one as a bearer credential).
# The owner of everything created without authentication (the pre-auth API's owner, kept).
OPEN_OWNER = "default"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/ui"})
# Browsers' EventSource cannot send headers: only event streams and the page take ?access_token=.
# Anywhere else a token in the URL would only end up in logs and histories, so it is refused.
QUERY_TOKEN_PATHS = re.compile(r"^/(?:ui|v1/events|v1/clusters/[^/]+/events)$")


@dataclass(frozen=True, slots=True)
class Identity:
    owner: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner filter for reads: ``None`` (every owner) for an admin."""
        return None if self.admin else self.owner


IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)


class Tokens:
    """The token table, compared in constant time so a timing cannot reveal a token's prefix."""

    def __init__(self, entries: Iterable[TokenEntry], anonymous: Identity | None = None) -> None:
        self._entries = [(e.token.encode(), Identity(e.owner, e.admin)) for e in entries]
        self.anonymous = anonymous

    def identify(self, token: str) -> Identity | None:
        given = token.encode()
        found = None
        for secret, identity in self._entries:
            if hmac.compare_digest(secret, given):
                found = identity
        return found

    @classmethod
    def open(cls, owner: str = OPEN_OWNER) -> Tokens:
        """No authentication: every request is an admin acting as ``owner`` (tests, loopback dev)."""
        return cls([], anonymous=Identity(owner, admin=True))

    @classmethod
    def from_settings(cls, api: ApiSettings) -> Tokens:
        """The table pitrixd serves with; a bad tokens file is a ConfigError naming the key."""
        entries = list(api.tokens)
        if api.tokens_file is not None:
            entries += read_tokens_file(api.tokens_file)
        mode = api.auth
        if mode == "auto":
            mode = "tokens" if entries else "none"
            if mode == "none" and api.unix_socket is None and not api.loopback:
                raise ConfigError(
                    "api.tokens: no token is configured, so api.listen must be a loopback address "
                    "(or set api.tokens / api.tokens_file)"
                )
        if mode == "tokens" and not entries and api.unix_socket is None:
            raise ConfigError("api.tokens: auth is 'tokens' but no token is configured")
        anonymous = None
        if mode == "none":
            anonymous = Identity(OPEN_OWNER, admin=True)
            get_logger("pitrix.api").warning(
                "admin API without authentication: every local user acts as admin", listen=api.listen
            )
        elif api.unix_socket is not None:
            anonymous = Identity(api.unix_socket_owner, admin=True)
        return cls(entries, anonymous)


def read_tokens_file(path: Path) -> list[TokenEntry]:
    data = read_toml(path, "api.tokens_file:")
    unknown = set(data) - {"tokens"}
    if unknown:
        raise ConfigError(f"api.tokens_file: {path}: unknown key {sorted(unknown)[0]!r} (only [[tokens]])")
    try:
        return TypeAdapter(list[TokenEntry]).validate_python(data.get("tokens", []))
    except ValidationError as exc:
        item = exc.errors()[0]
        where = ".".join(str(p) for p in item["loc"])
        raise ConfigError(f"api.tokens_file: {path}: tokens.{where}: {item['msg']}") from None


def auth_middleware(tokens: Tokens) -> Middleware:  # aiohttp's protocol for a middleware
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if header and (scheme.lower() != "bearer" or not token.strip()):
            return _unauthorized("Authorization: must be 'Bearer <token>'")
        token = token.strip()
        if "access_token" in request.query:
            if not QUERY_TOKEN_PATHS.match(request.path):
                return error_response(
                    400,
                    "invalid",
                    "access_token: taken only by event streams and /ui; send 'Authorization: Bearer'",
                    "access_token",
                )
            token = token or request.query["access_token"]
        if token:
            identity = tokens.identify(token)
            if identity is None:
                return _unauthorized("Authorization: unknown token")
        elif tokens.anonymous is not None:
            identity = tokens.anonymous
        elif request.path in PUBLIC_PATHS:
            identity = Identity("anonymous")
        else:
            return _unauthorized("Authorization: a bearer token is required")
        request[IDENTITY] = identity
        return await handler(request)

    return authenticate


def _unauthorized(message: str) -> web.Response:
    response = error_response(401, "unauthorized", message, "Authorization")
    response.headers["WWW-Authenticate"] = 'Bearer realm="pitrix"'
    return response


def identity_of(request: web.Request) -> Identity:
    return request[IDENTITY]


def require_admin(request: web.Request) -> Identity:
    identity = request[IDENTITY]
    if not identity.admin:
        raise web.HTTPForbidden(text="only an admin token may do this")
    return identity
