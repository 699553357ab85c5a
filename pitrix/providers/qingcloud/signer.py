"""QingCloud API signature version 1 (HmacSHA256), shared by the client and the simulator.

One function computes the signature for both sides, so the simulator can never accept a request
that real QingCloud would refuse because of a signing difference. The canonical form is QingCloud's:
parameters sorted by name, names quoted with nothing safe, values quoted with ``-_~`` safe, joined
with ``&`` under ``METHOD\\n/path/\\n``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

SIGNATURE_METHOD = "HmacSHA256"
SIGNATURE_VERSION = "1"
API_VERSION = "1"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _text(value: object) -> str:
    # QingCloud clients send numbers as their decimal text; bools are not part of the API.
    return value if isinstance(value, str) else str(value)


def canonical_query(params: Mapping[str, object]) -> str:
    """The sorted, quoted query string that is signed (``signature`` itself excluded)."""
    pairs = []
    for key in sorted(k for k in params if k != "signature"):
        pairs.append(f"{quote(key, safe='')}={quote(_text(params[key]), safe='-_~')}")
    return "&".join(pairs)


def string_to_sign(method: str, path: str, params: Mapping[str, object]) -> str:
    return f"{method.upper()}\n{path}\n{canonical_query(params)}"


def sign(secret_access_key: str, method: str, path: str, params: Mapping[str, object]) -> str:
    """The base64 signature (not URL-quoted) of a request with these parameters."""
    digest = hmac.new(
        secret_access_key.encode(), string_to_sign(method, path, params).encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def verify(
    secret_access_key: str, method: str, path: str, params: Mapping[str, object], signature: str
) -> bool:
    """Whether ``signature`` is the one ``params`` should carry (constant-time comparison)."""
    return hmac.compare_digest(sign(secret_access_key, method, path, params), signature)


def format_time_stamp(moment: datetime | None = None) -> str:
    """QingCloud's ``time_stamp`` (UTC, seconds)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(TIME_FORMAT)


def parse_time_stamp(text: str) -> datetime:
    """Parse ``time_stamp``; raises ``ValueError`` when it is not QingCloud's format."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def signed_params(
    params: Mapping[str, object],
    *,
    access_key_id: str,
    secret_access_key: str,
    method: str = "POST",
    path: str = "/iaas/",
    now: datetime | None = None,
) -> dict[str, str]:
    """``params`` plus the common authentication parameters and their signature."""
    out = {key: _text(value) for key, value in params.items()}
    out.update(
        access_key_id=access_key_id,
        signature_method=SIGNATURE_METHOD,
        signature_version=SIGNATURE_VERSION,
        version=API_VERSION,
        time_stamp=format_time_stamp(now),
    )
    out["signature"] = sign(secret_access_key, method, path, out)
    return out
