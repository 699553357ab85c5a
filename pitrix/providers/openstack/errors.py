"""openstacksdk's and keystoneauth's exceptions as ``ProviderError``.

Both libraries raise their own trees; what the runtime needs is the HTTP status as the code, a
message naming the call, and whether retrying may help (no answer, 5xx, 429).
"""

from __future__ import annotations

from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from pitrix.providers.base import ProviderError


def to_provider_error(action: str, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ksa.Unauthorized | ksa.AuthorizationFailure) or (
        isinstance(exc, sdk.HttpException) and exc.status_code == 401
    ):
        return ProviderError(f"openstack {action}: credentials refused: {_details(exc)}", code="credentials")
    if isinstance(exc, ksa.ConnectFailure | ksa.ConnectTimeout | ksa.RetriableConnectionFailure):
        return ProviderError(
            f"openstack {action}: cannot reach the cloud: {exc}", code="connect", retryable=True
        )
    if isinstance(exc, sdk.HttpException):
        status = int(exc.status_code or 0)
        return ProviderError(
            f"openstack {action}: HTTP {status}: {_details(exc)}",
            code=f"http-{status}",
            retryable=status >= 500 or status == 429,
        )
    if isinstance(exc, ksa.EndpointNotFound | ksa.DiscoveryFailure | ksa.MissingRequiredOptions):
        return ProviderError(f"openstack {action}: {exc}", code="config")
    if isinstance(exc, sdk.SDKException | ksa.ClientException):
        return ProviderError(f"openstack {action}: {type(exc).__name__}: {exc}", code=type(exc).__name__)
    raise exc


def _details(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details or getattr(exc, "message", None) or exc)
