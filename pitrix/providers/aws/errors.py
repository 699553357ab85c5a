"""botocore's exceptions as ``ProviderError``: the EC2 error code kept, classified as a ``Failure``.

Throttling and an endpoint never reached did nothing (``NOTHING_DONE``); server trouble and a
connection lost mid-call may pass (``TRANSIENT``); the rest is ``TERMINAL``.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from pitrix.providers.errors import Failure, ProviderError

THROTTLING = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
    }
)
SERVER_TROUBLE = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
CREDENTIALS = frozenset(
    {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"}
)


def to_provider_error(action: str, exc: Exception) -> ProviderError:
    """What the runtime sees of a failed EC2 call; never includes the request's credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = str(error.get("Message", "")) or str(exc)
        if code in CREDENTIALS or status == 401:
            return ProviderError(f"aws {action}: credentials refused ({code}): {message}", code=code)
        return ProviderError(
            f"aws {action}: {code}: {message}", code=code, failure=client_failure(code, status)
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderError(f"aws {action}: no usable credentials: {exc}", code="credentials")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return ProviderError(
            f"aws {action}: cannot reach EC2: {exc}", code="connect", failure=Failure.NOTHING_DONE
        )
    if isinstance(exc, ConnectionError | HTTPClientError):  # reached, then the answer was lost
        return ProviderError(
            f"aws {action}: no answer from EC2: {exc}", code="connection", failure=Failure.TRANSIENT
        )
    if isinstance(exc, BotoCoreError):
        return ProviderError(f"aws {action}: {type(exc).__name__}: {exc}", code=type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return ProviderError(f"aws {action}: no answer in time", code="timeout", failure=Failure.TRANSIENT)
    raise exc


def client_failure(code: str, status: int) -> Failure:
    """What an EC2 error answer means for trying again."""
    if code in THROTTLING or status == 429:
        return Failure.NOTHING_DONE
    if code in SERVER_TROUBLE or status >= 500:
        return Failure.TRANSIENT
    return Failure.TERMINAL
