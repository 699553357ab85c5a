"""A signed QingCloud API v1 client over aiohttp: one call, its errors, and its retries.

QingCloud answers errors with HTTP 200 and a ``ret_code``; the codes from 5000 up and 1500
(throttled) are the server's trouble or a request to slow down, so they are retried with backoff
here and surface as retryable ``ProviderError`` only when the attempts run out. Everything else is
the caller's mistake and is raised at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.providers.base import ProviderError
from pitrix.providers.qingcloud.signer import signed_params

THROTTLED = 1500
RETRYABLE_RET_CODES = frozenset({THROTTLED, 5000, 5100, 5200, 5300})
# Failures after which the cloud certainly did not act: safe to repeat even a non-idempotent call.
NOTHING_DONE_CODES = frozenset({str(THROTTLED), "connect"})


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
        """Run ``action``; retries retryable failures, then raises ``ProviderError``.

        A call that is not idempotent (RunInstances: QingCloud has no client token) is repeated
        only when the cloud certainly did nothing: it was never reached, or it said "throttled".
        A lost answer is left to the caller, who looks the instances up by name.
        """
        backoff = Backoff(self._backoff, self._max_backoff)
        deadline = time.monotonic() + self._timeout
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await self._call_once(action, params or {})
            except ProviderError as exc:
                delay = backoff.next()
                last_try = attempt == self._max_attempts or time.monotonic() + delay > deadline
                repeatable = exc.retryable and (idempotent or exc.code in NOTHING_DONE_CODES)
                if not repeatable or last_try:
                    raise
                self._log.info(
                    "qingcloud.retry", action=action, attempt=attempt, code=exc.code, error=str(exc)
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

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
                f"qingcloud {action}: cannot connect to {self.url}: {exc}", code="connect", retryable=True
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(
                f"qingcloud {action}: no answer from {self.url}: {exc or type(exc).__name__}",
                code="connection",
                retryable=True,
            ) from exc
        if status >= 500:
            raise ProviderError(f"qingcloud {action}: HTTP {status}", code=f"http-{status}", retryable=True)
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
                retryable=code in RETRYABLE_RET_CODES,
            )
        return reply
