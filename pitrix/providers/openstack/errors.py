"""openstacksdk's and keystoneauth's exceptions as ``ProviderError``.

Both libraries raise their own trees; what the runtime needs is the HTTP status as the code, a
message naming the call, and its ``Failure``: 429 and a connection never made did nothing
(``NOTHING_DONE``), 5xx and a connection that failed may pass (``TRANSIENT``), the rest is ``TERMINAL``.
"""

from __future__ import annotations

from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from pitrix.providers.errors import Failure, ProviderError


def to_provider_error(action: str, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ksa.Unauthorized | ksa.AuthorizationFailure) or (
        isinstance(exc, sdk.HttpException) and exc.status_code == 401
    ):
        return ProviderError(f"openstack {action}: credentials refused: {_details(exc)}", code="credentials")
    if isinstance(exc, ksa.ConnectTimeout):
        return ProviderError(
            f"openstack {action}: cannot reach the cloud: {exc}", code="connect", failure=Failure.NOTHING_DONE
        )
    if isinstance(exc, ksa.ConnectFailure | ksa.RetriableConnectionFailure):
        # requests' connection errors include a connection reset mid-call: the cloud may have acted.
        return ProviderError(
            f"openstack {action}: cannot reach the cloud: {exc}", code="connect", failure=Failure.TRANSIENT
        )
    if isinstance(exc, sdk.HttpException):
        status = int(exc.status_code or 0)
        return ProviderError(
            f"openstack {action}: HTTP {status}: {_details(exc)}",
            code=f"http-{status}",
            failure=http_failure(status),
        )
    if isinstance(exc, ksa.EndpointNotFound | ksa.DiscoveryFailure | ksa.MissingRequiredOptions):
        return ProviderError(f"openstack {action}: {exc}", code="config")
    if isinstance(exc, sdk.SDKException | ksa.ClientException):
        return ProviderError(f"openstack {action}: {type(exc).__name__}: {exc}", code=type(exc).__name__)
    raise exc


def http_failure(status: int) -> Failure:
    if status == 429:
        return Failure.NOTHING_DONE
    return Failure.TRANSIENT if status >= 500 else Failure.TERMINAL


def _details(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details or getattr(exc, "message", None) or exc)
