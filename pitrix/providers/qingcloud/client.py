"""A signed QingCloud API v1 client over aiohttp: one call, its errors, and its retries.

QingCloud answers errors with HTTP 200 and a ``ret_code``. 1500 (throttled) asks us to slow down
and did nothing (``NOTHING_DONE``), as does an endpoint never reached; the codes from 5000 up are
the server's trouble (``TRANSIENT``); everything else is the caller's mistake (``TERMINAL``). The
call is repeated here as :func:`pitrix.providers.polling.with_retries` allows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.providers.errors import Failure, ProviderError
from pitrix.providers.polling import with_retries
from pitrix.providers.qingcloud.signer import signed_params

THROTTLED = 1500
SERVER_TROUBLE = 5000  # this code and every one above it


def ret_code_failure(ret_code: int) -> Failure:
    if ret_code == THROTTLED:
        return Failure.NOTHING_DONE
    return Failure.TRANSIENT if ret_code >= SERVER_TROUBLE else Failure.TERMINAL


def api_url(endpoint: str) -> tuple[str, str]:
    """The ``/iaas/`` URL of an endpoint and the path that gets signed."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderError(f"endpoint: expected http(s)://host[:port], got {endpoint!r}", code="config")
    path = parts.path.rstrip("/")
    if not path.endswith("/iaas"):
        path += "/iaas"
    path += "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), path


class QingCloudClient:
    """Signs, sends and decodes QingCloud API calls; one aiohttp session per client."""

    def __init__(
        self,
        endpoint: str,
        zone: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        self.url, self.path = api_url(endpoint)
        self.zone = zone
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._log = get_logger("pitrix.providers.qingcloud", zone=zone)

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a session belongs to the running loop, a provider may be built outside one.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def call(
        self, action: str, params: Mapping[str, object] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """Run ``action``, repeated while its failure allows (``with_retries``), within the timeout.

        RunInstances is not idempotent (QingCloud has no client token): it is repeated only when
        the cloud certainly did nothing. A lost answer is left to the step, which looks the
        instances up by name before it creates them again.
        """
        return await with_retries(
            lambda: self._call_once(action, params or {}),
            action=action,
            attempts=self._max_attempts,
            log=self._log,
            backoff=Backoff(self._backoff, self._max_backoff),
            idempotent=idempotent,
            budget=self._timeout,
        )

    async def _call_once(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        body = signed_params(
            {"action": action, "zone": self.zone, **params},
            access_key_id=self._access_key_id,
            secret_access_key=self._secret,
            method="POST",
            path=self.path,
        )
        try:
            async with self._get_session().post(self.url, data=body) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise ProviderError(
                f"qingcloud {action}: cannot connect to {self.url}: {exc}",
                code="connect",
                failure=Failure.NOTHING_DONE,
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(
                f"qingcloud {action}: no answer from {self.url}: {exc or type(exc).__name__}",
                code="connection",
                failure=Failure.TRANSIENT,
            ) from exc
        if status >= 500:
            raise ProviderError(
                f"qingcloud {action}: HTTP {status}", code=f"http-{status}", failure=Failure.TRANSIENT
            )
        try:
            reply = json.loads(text)
        except ValueError as exc:
            raise ProviderError(
                f"qingcloud {action}: HTTP {status}, not JSON: {text[:200]!r}", code=f"http-{status}"
            ) from exc
        if not isinstance(reply, dict):
            raise ProviderError(f"qingcloud {action}: unexpected reply {text[:200]!r}", code="protocol")
        ret_code = reply.get("ret_code", 0 if status == 200 else status)
        if ret_code != 0:
            code = int(ret_code) if isinstance(ret_code, int | str) and str(ret_code).isdigit() else -1
            raise ProviderError(
                f"qingcloud {action}: ret_code {ret_code}: {reply.get('message', '')}",
                code=str(ret_code),
                failure=ret_code_failure(code),
            )
        return reply
