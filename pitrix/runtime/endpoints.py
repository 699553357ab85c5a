"""A cluster's endpoints with their ports as numbers: ``env.<key>`` ports read from its parameters.

AppCenter packages name a port by a parameter (``"port": "env.advertised.port"``) so a user's
change of that parameter moves the endpoint; 0 means no port is fixed. Whoever shows or
publishes endpoints reads them here, so every reader resolves them the same way.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.params import CLUSTER_SCOPE, Env, effective
from pitrix.runtime.spec import AppSpec


def port_of(app: AppSpec, env: Env, port: int | str) -> int:
    """The port number ``port`` stands for: itself, or its parameter's value (cluster-level
    first, then the first role declaring it); 0 when that value is not a port."""
    if isinstance(port, int):
        return port
    key = port.removeprefix("env.")
    value: str | None = None
    if key in app.env:
        value = {**app.env_defaults(), **env.get(CLUSTER_SCOPE, {})}.get(key)
    else:
        for role in app.roles:
            if key in role.env:
                value = effective(app, env, role.name).get(key)
                break
    try:
        number = int(str(value))
    except ValueError:
        return 0
    return number if 0 <= number <= 65535 else 0


def resolved(app: AppSpec, env: Env) -> dict[str, dict[str, Any]]:
    """``{name: {port, protocol}}`` with every port a number; ``from`` names the parameter a
    port was read from."""
    out: dict[str, dict[str, Any]] = {}
    for name, endpoint in app.endpoints.items():
        entry: dict[str, Any] = {"port": port_of(app, env, endpoint.port), "protocol": endpoint.protocol}
        if isinstance(endpoint.port, str):
            entry["from"] = endpoint.port
        out[name] = entry
    return out
