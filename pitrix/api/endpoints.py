"""A cluster's endpoints as an operator reaches them: each declared endpoint with its port and the
addresses of the nodes that have one.

The app declares endpoints once for the cluster; the port is a number or ``env.<key>``, read here from
the cluster's values (or the parameter's default), so the page and ``show`` print where to connect.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pitrix.runtime.params import CLUSTER_SCOPE
from pitrix.runtime.records import Cluster


def _port(cluster: Cluster, port: int | str) -> int | None:
    """The port number, or None when an ``env.<key>`` port has no value (or not a number)."""
    if isinstance(port, int):
        return port or None
    key = port[len("env.") :]
    value = cluster.env.get(CLUSTER_SCOPE, {}).get(key)
    if value is None:
        declared = cluster.app.env.get(key)
        value = None if declared is None or declared.default is None else str(declared.default)
    if value is None:
        for scope, values in cluster.env.items():  # a role-level parameter of that name
            if scope != CLUSTER_SCOPE and key in values:
                value = values[key]
                break
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _ip_order(ip: str) -> tuple[int, int, str]:
    """Numeric order (10.0.0.2 before 10.0.0.10); anything not an address after, by its text."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (1, 0, ip)
    return (0, int(address), ip)


def endpoints_view(cluster: Cluster, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ips = sorted({n["ip"] for n in nodes if n.get("ip") and n.get("status") != "terminated"}, key=_ip_order)
    shown = []
    for name, endpoint in sorted(cluster.app.endpoints.items()):
        port = _port(cluster, endpoint.port)
        shown.append(
            {
                "name": name,
                "protocol": endpoint.protocol,
                "port": port,
                "addresses": [f"{ip}:{port}" for ip in ips] if port else ips,
            }
        )
    return shown
