"""The cluster's node records in etcd: the one place a step learns which nodes exist and where."""

from __future__ import annotations

from collections.abc import Iterable

from pitrix.runtime.keys import node_key, nodes_prefix
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.steps.context import JobContext
from pitrix.store.types import Op


def all_node_ids(cluster: Cluster, counts: dict[str, int] | None = None) -> list[str]:
    """Every node id of the cluster at ``counts`` (its own counts when None), role by role."""
    counts = counts if counts is not None else cluster.counts
    return [f"{role}-{i}" for role, count in counts.items() for i in range(1, count + 1)]


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


async def plan_nodes(ctx: JobContext, counts: dict[str, int]) -> str:
    """Node records for every role up to its count (existing ones are kept)."""
    existing = {n.node_id for n in await nodes(ctx)}
    added = []
    for role, count in counts.items():
        for index in range(1, count + 1):
            node_id = f"{role}-{index}"
            if node_id not in existing:
                node = Node(node_id=node_id, role=role, index=index, name=f"{ctx.cid}-{node_id}")
                await save(ctx, node)
                added.append(node_id)
    return f"planned {', '.join(added)}" if added else "nothing to plan"
