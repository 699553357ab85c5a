"""Checking a QingCloud request's signature, key and time stamp, as QingCloud does."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pitrix.providers.qingcloud.signer import SIGNATURE_METHOD, parse_time_stamp, verify
from simulator.errors import AUTH_FAILED, REQUEST_EXPIRED, ApiError, invalid

# How far a request's time_stamp may be from the simulator's clock.
MAX_SKEW = timedelta(minutes=15)


def authenticate(
    params: Mapping[str, str],
    *,
    method: str,
    path: str,
    secrets: Mapping[str, str],
    now: datetime | None = None,
) -> str:
    """The caller's access key id if the request is signed by it; ``ApiError`` otherwise."""
    for name in ("access_key_id", "signature", "time_stamp"):
        if not params.get(name):
            raise invalid(f"parameter [{name}] should not be empty")
    method_name = params.get("signature_method", SIGNATURE_METHOD)
    if method_name != SIGNATURE_METHOD:
        raise invalid(
            f"parameter [signature_method] [{method_name}] is not supported, use {SIGNATURE_METHOD}"
        )
    if params.get("signature_version", "1") != "1":
        raise invalid(f"parameter [signature_version] [{params['signature_version']}] is not supported")
    try:
        stamp = parse_time_stamp(params["time_stamp"])
    except ValueError:
        raise invalid(f"parameter [time_stamp] [{params['time_stamp']}] is not %Y-%m-%dT%H:%M:%SZ") from None
    if abs((now or datetime.now(UTC)) - stamp) > MAX_SKEW:
        raise ApiError(REQUEST_EXPIRED, f"RequestExpired, time_stamp [{params['time_stamp']}] has expired")
    key = params["access_key_id"]
    secret = secrets.get(key)
    if secret is None:
        raise ApiError(AUTH_FAILED, f"AuthFailure, access key id [{key}] does not exist")
    if not verify(secret, method, path, params, params["signature"]):
        raise ApiError(AUTH_FAILED, "AuthFailure, signature not matched")
    return key
