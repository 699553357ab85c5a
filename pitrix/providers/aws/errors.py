"""botocore's exceptions as ``ProviderError``: the EC2 error code kept, throttling marked retryable."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from pitrix.providers.base import ProviderError

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
        retryable = code in THROTTLING or code in SERVER_TROUBLE or status >= 500
        if code in CREDENTIALS or status == 401:
            return ProviderError(f"aws {action}: credentials refused ({code}): {message}", code=code)
        return ProviderError(f"aws {action}: {code}: {message}", code=code, retryable=retryable)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderError(f"aws {action}: no usable credentials: {exc}", code="credentials")
    if isinstance(exc, EndpointConnectionError | ConnectionError):
        return ProviderError(f"aws {action}: cannot reach EC2: {exc}", code="connect", retryable=True)
    if isinstance(exc, BotoCoreError):
        return ProviderError(f"aws {action}: {type(exc).__name__}: {exc}", code=type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return ProviderError(f"aws {action}: no answer in time", code="timeout", retryable=True)
    raise exc
