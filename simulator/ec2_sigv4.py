"""Checking an EC2 request's Signature Version 4, with botocore's own signer.

The request is rebuilt from what the client said it signed (the ``SignedHeaders`` of its
``Authorization`` header, the body, the ``X-Amz-Date``), signed again with the simulator's secret
for the scope the client named, and the two signatures compared in constant time. The checks come
in the order EC2 reports them: no or unreadable authorization, an unknown key (``AuthFailure``),
a scope for another region or service, a stale date (``RequestExpired``), then the signature
itself (``SignatureDoesNotMatch``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from simulator.ec2_wire import Ec2Error

MAX_SKEW = timedelta(minutes=15)
SERVICE = "ec2"
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>[0-9]{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def _auth_failure(message: str) -> Ec2Error:
    return Ec2Error("AuthFailure", message, 401)


def authenticate(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    now: datetime | None = None,
) -> str:
    """The access key id that signed this request; ``Ec2Error`` otherwise."""
    authorization = headers.get("Authorization", "")
    if not authorization:
        raise _auth_failure("AWS was not able to validate the provided access credentials")
    parts = AUTHORIZATION.match(authorization.strip())
    if parts is None:
        raise Ec2Error(
            "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature"
        )
    key = parts["key"]
    secret = secrets.get(key)
    if secret is None:
        raise _auth_failure("AWS was not able to validate the provided access credentials")
    if parts["region"] != region or parts["service"] != SERVICE:
        raise Ec2Error(
            "SignatureDoesNotMatch",
            f"Credential should be scoped to a valid region and service ({region}/{SERVICE}), "
            f"not '{parts['region']}/{parts['service']}'",
            403,
        )
    stamp_text = headers.get("X-Amz-Date", "")
    try:
        stamp = datetime.strptime(stamp_text, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise Ec2Error("IncompleteSignature", "Request must contain a valid X-Amz-Date header") from None
    if stamp_text[:8] != parts["date"]:
        raise Ec2Error("SignatureDoesNotMatch", "Credential date does not match X-Amz-Date", 403)
    if abs((now or datetime.now(UTC)) - stamp) > MAX_SKEW:
        raise Ec2Error("RequestExpired", f"Request has expired (X-Amz-Date {stamp_text})")
    signed = parts["headers"].split(";")
    if "host" not in signed:
        raise Ec2Error("SignatureDoesNotMatch", "The host header must be signed", 403)
    missing = [name for name in signed if name not in headers]  # headers: case-insensitive
    if missing:
        raise Ec2Error("SignatureDoesNotMatch", f"Signed header {missing[0]} is not in the request", 403)
    wanted = {name: headers[name] for name in signed}
    request = AWSRequest(method=method, url=url, headers=wanted, data=body)
    request.context["timestamp"] = stamp_text
    signer = SigV4Auth(Credentials(key, secret), SERVICE, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if signer.signed_headers(signer.headers_to_sign(request)) != parts["headers"] or not hmac.compare_digest(
        expected.encode(), parts["signature"].encode()
    ):
        raise Ec2Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check "
            "your AWS Secret Access Key and signing method.",
            403,
        )
    return key
