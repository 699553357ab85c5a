"""The cluster's reserved addresses (``AppSpec.reserved_ips``, AppCenter's VIPs): allocated through
the cloud before the nodes are registered, published with the cluster, released at delete.

Each address has a deterministic cloud name, ``<cluster_id>-vip-<name>``, and is looked up by it
before one is allocated; what was found or allocated is recorded in pitrixd's etcd
(``keys.reserved_ip_key``) before the step ends, so a create repeated after a crash finds its own
address and every later registration (scale, recover, start, upgrade) publishes the same one.
The release looks by name as well, so an address allocated just before a crash, whose record was
never written, is released too. Binding the address on a node is the app's own work.
"""

from __future__ import annotations

import json
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.providers.addresses import Address, reserved_addresses
from pitrix.runtime.keys import reserved_ip_key, reserved_ips_prefix
from pitrix.runtime.records import Cluster
from pitrix.runtime.steps.context import JobContext
from pitrix.store.types import Op

RESERVED_IPS = "reserved_ips"


def address_name(cid: str, name: str) -> str:
    return f"{cid}-vip-{name}"


def declared(cluster: Cluster) -> bool:
    return bool(cluster.app.reserved_ips)


def _network(ctx: JobContext) -> str:
    return ctx.runtime.network if ctx.runtime is not None else ""


def _record(name: str, address: Address) -> bytes:
    fields = {"name": name, "address_id": address.address_id, "address": address.address}
    return json.dumps({**fields, "network": address.network}, sort_keys=True).encode()


async def recorded(ctx: JobContext) -> dict[str, dict[str, str]]:
    """The cluster's reserved addresses as recorded: name -> {address_id, address, network}."""
    kvs, _ = await ctx.store.get_prefix(reserved_ips_prefix(ctx.cid))
    found: dict[str, dict[str, str]] = {}
    for kv in kvs:
        record = json.loads(kv.value)
        found[str(record["name"])] = {k: str(v) for k, v in record.items() if k != "name"}
    return found


async def reserve(ctx: JobContext) -> str:
    """Each declared reserved IP: found by its name or allocated in the cluster's network, then
    recorded. A record already there is trusted only while the cloud still shows its address."""
    cloud = reserved_addresses(ctx.provider)
    network = _network(ctx)
    done: list[str] = []
    for name in ctx.cluster.app.reserved_ips:
        cloud_name = address_name(ctx.cid, name)
        address = await cloud.find_address(cloud_name, network)
        if address is None:
            address = await cloud.allocate_address(
                cloud_name, network, {"pitrix:cluster": ctx.cid, "pitrix:owner": ctx.cluster.owner}
            )
            ctx.log.info("reserved_ip.allocated", name=name, address=address.address, id=address.address_id)
        await ctx.write(Op("put", reserved_ip_key(ctx.cid, name), _record(name, address)))
        done.append(f"{name}={address.address}")
    return f"reserved {', '.join(done)}" if done else "no reserved IPs"


async def release(ctx: JobContext) -> str:
    """Give every reserved address of the cluster back: those recorded, and any the cloud shows
    under the cluster's names (allocated by a create that crashed before recording it)."""
    cloud = reserved_addresses(ctx.provider)
    network = _network(ctx)
    records = await recorded(ctx)
    released: list[str] = []
    for name in sorted(set(ctx.cluster.app.reserved_ips) | set(records)):
        ids = {records[name]["address_id"]} if name in records else set()
        found = await cloud.find_address(address_name(ctx.cid, name), network)
        if found is not None:
            ids.add(found.address_id)
        for address_id in sorted(ids):
            await cloud.release_address(address_id)
        await ctx.write(Op("delete", reserved_ip_key(ctx.cid, name)))
        if ids:
            released.append(name)
    return f"released {', '.join(released)}" if released else "nothing to release"


def published(cluster: Cluster, records: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The addresses as a ``cluster`` entry shows them: under ``endpoints/reserved_ips`` for an
    AppCenter package (where its templates read ``.../<name>/value``), else ``reserved_ips``."""
    values = {name: {"value": r["address"]} for name, r in sorted(records.items())}
    if not values:
        return {}
    if cluster.app.profile == "appcenter":
        return {ks.ENDPOINTS: {RESERVED_IPS: values}}
    return {RESERVED_IPS: values}
