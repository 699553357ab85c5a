"""A cluster's endpoints as an operator reaches them: each declared endpoint with its port and the
addresses of the live nodes.

The port is a number or ``env.<key>``, read through :mod:`pitrix.runtime.endpoints` (what the
metadata publishes too), so the page, ``show`` and the instances agree on where to connect.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pitrix.runtime.endpoints import resolved
from pitrix.runtime.records import Cluster


def _ip_order(ip: str) -> tuple[int, int, str]:
    """Numeric order (10.0.0.2 before 10.0.0.10); anything not an address after, by its text."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (1, 0, ip)
    return (0, int(address), ip)


def endpoints_view(cluster: Cluster, nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: {port, protocol, addresses[, from]}}``: port 0 when none is fixed (or its
    parameter holds no port), then the addresses are the nodes' without a port."""
    ips = sorted({n["ip"] for n in nodes if n.get("ip") and n.get("status") != "terminated"}, key=_ip_order)
    shown = resolved(cluster.app, cluster.env)
    for entry in shown.values():
        port = entry["port"]
        entry["addresses"] = [f"{ip}:{port}" for ip in ips] if port else ips
    return shown
