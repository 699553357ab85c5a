"""The cluster's node records in etcd: the one place a step learns which nodes exist and where."""

from __future__ import annotations

from collections.abc import Iterable

from pitrix.runtime.keys import node_key, nodes_prefix
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.txn_size import largest_transaction
from pitrix.store.types import Op


def all_node_ids(cluster: Cluster, counts: dict[str, int] | None = None) -> list[str]:
    """The node ids a cluster is created with: ``<role>-1`` up to its count, role by role.

    Only create may assume them: once chosen nodes were scaled in, a role's ids have gaps; every
    later plan takes the ids from the node records (``node_ids``).
    """
    counts = counts if counts is not None else cluster.counts
    return [f"{role}-{i}" for role, count in counts.items() for i in range(1, count + 1)]


def node_ids(ctx: JobContext) -> list[str]:
    """The cluster's node ids as its node records said when the job's plan was made (in spec
    role order, then by index); the ids a create gives when the context was built without them."""
    if ctx.node_ids is None:
        return all_node_ids(ctx.cluster)
    return sort_ids(ctx.cluster, ctx.node_ids)


def split_id(node_id: str) -> tuple[str, int]:
    """``web-12`` → ``("web", 12)`` (roles may hold ``-``; the index is after the last one)."""
    role, _, index = node_id.rpartition("-")
    return role, int(index) if index.isdigit() else 0


def sort_ids(cluster: Cluster, ids: Iterable[str]) -> list[str]:
    """Node ids in the spec's role order, then by index (not as text: web-10 after web-9)."""
    order = {role.name: position for position, role in enumerate(cluster.app.roles)}

    def key(node_id: str) -> tuple[int, str, int]:
        role, index = split_id(node_id)
        return order.get(role, len(order)), role, index

    return sorted(ids, key=key)


def free_ids(role: str, taken: Iterable[str], count: int) -> list[str]:
    """``count`` new node ids for ``role``: the lowest indexes no node of the role holds now.

    After chosen nodes were scaled in, a later scale-out fills the gaps first (an instance's
    name is its node id, and the leaver's instance is terminated, so the name is free again).
    """
    used = {index for node_id in taken for r, index in [split_id(node_id)] if r == role}
    fresh: list[str] = []
    index = 1
    while len(fresh) < count:
        if index not in used:
            fresh.append(f"{role}-{index}")
        index += 1
    return fresh


async def nodes(ctx: JobContext, role: str | None = None) -> list[Node]:
    kvs, _ = await ctx.store.get_prefix(nodes_prefix(ctx.cid))
    found = [Node.model_validate_json(kv.value) for kv in kvs]
    found = [n for n in found if role is None or n.role == role]
    return sorted(found, key=lambda n: (n.role, n.index))


async def members(ctx: JobContext, node_ids: Iterable[str]) -> list[Node]:
    wanted = set(node_ids)
    return [n for n in await nodes(ctx) if n.node_id in wanted]


async def save(ctx: JobContext, node: Node) -> None:
    await ctx.write(Op("put", node_key(ctx.cid, node.node_id), node.dump()))


async def save_all(ctx: JobContext, nodes: Iterable[Node]) -> None:
    """The nodes' records in one fenced transaction (one per role's worth of nodes, the largest
    transaction pitrixd's etcd is checked to take at start): a step that updates every node
    paid one round trip of etcd per node."""
    ops = [Op("put", node_key(ctx.cid, node.node_id), node.dump()) for node in nodes]
    size = largest_transaction()
    for start in range(0, len(ops), size):
        await ctx.write(*ops[start : start + size])


async def plan_nodes(ctx: JobContext, counts: dict[str, int]) -> str:
    """Node records for every role up to its count (existing ones are kept): create's nodes."""
    return await plan_node_ids(
        ctx, [f"{role}-{i}" for role, count in counts.items() for i in range(1, count + 1)]
    )


async def plan_node_ids(ctx: JobContext, node_ids: list[str]) -> str:
    """Node records for ``node_ids`` (existing ones are kept)."""
    existing = {n.node_id for n in await nodes(ctx)}
    added = []
    planned = []
    for node_id in node_ids:
        if node_id not in existing:
            role, index = split_id(node_id)
            planned.append(Node(node_id=node_id, role=role, index=index, name=f"{ctx.cid}-{node_id}"))
            added.append(node_id)
    await save_all(ctx, planned)
    return f"planned {', '.join(added)}" if added else "nothing to plan"
