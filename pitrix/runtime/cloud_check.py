"""Whether a runtime's endpoint answers and takes its credentials, asked before it is saved.

A wrong endpoint or key would otherwise surface only inside the first create, many seconds and a
half-made plan later. One read-only call (list instances by a name nobody uses) proves both: it is
signed with the credentials and needs no quota, and it changes nothing on the cloud.
"""

from __future__ import annotations

import asyncio

from pitrix.providers.base import Provider
from pitrix.providers.errors import ProviderError
from pitrix.runtime.actions.base import InvalidRequest
from pitrix.runtime.records import Runtime

# Long enough for a provider's own retries of an unreachable endpoint, short for a person waiting.
CHECK_TIMEOUT = 20.0
# No instance pitrix makes is named so: the answer is an empty list on any account.
PROBE_PREFIX = "pitrix-runtime-check-"
# Provider error codes that say the endpoint, not the credentials, is wrong.
ENDPOINT_CODES = frozenset({"config", "connect", "connection", "timeout", "protocol"})
CREDENTIAL_CODES = frozenset({"1200", "1300", "credentials"})


def _field(exc: ProviderError) -> str:
    code = exc.code
    if code == "network":
        return "network"
    if code in ENDPOINT_CODES or code.startswith("http-"):
        return "endpoint"
    if code in CREDENTIAL_CODES or "credential" in str(exc).lower():
        return "credentials"
    return "runtime"


async def check_cloud(runtime: Runtime, provider: Provider, timeout: float = CHECK_TIMEOUT) -> None:
    """Raise an InvalidRequest naming what is wrong (endpoint, credentials, or the runtime) if the
    cloud does not answer a read-only call with these settings."""
    where = f"{runtime.provider} at {runtime.endpoint or 'its default endpoint'}"
    try:
        async with asyncio.timeout(timeout):
            await provider.describe_instances(name_prefix=PROBE_PREFIX)
            # A provider that can tell whether the runtime's network exists (QingCloud's vxnet).
            check_network = getattr(provider, "check_network", None)
            if check_network is not None:
                await check_network()
    except ProviderError as exc:
        field = _field(exc)
        advice = {
            "endpoint": "check --endpoint (and --zone)",
            "credentials": "check the access key and secret (--credentials-file)",
            "runtime": "check the runtime's settings",
            "network": "check --network",
        }[field]
        raise InvalidRequest(
            f"{field}: {where} failed a read-only call "
            f"({'look up the network' if field == 'network' else 'list instances'}): {exc}; {advice}; "
            "nothing was saved"
        ) from None
    except TimeoutError:
        raise InvalidRequest(
            f"endpoint: {where} did not answer a read-only call within {timeout:.0f} s; nothing was saved"
        ) from None
    except Exception as exc:  # a provider library failing on these settings before any request
        raise InvalidRequest(
            f"runtime: {where} cannot be called with these settings: {type(exc).__name__}: {exc}; "
            "nothing was saved"
        ) from None
