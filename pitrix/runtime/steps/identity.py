"""Who a node is to metad: its bootstrap token, its mapping, and the files its agent starts with."""

from __future__ import annotations

import hashlib
import secrets
import time
import zlib
from typing import Any

from pitrix.runtime import userdata
from pitrix.runtime.keys import token_key
from pitrix.runtime.records import Node
from pitrix.runtime.steps.context import JobContext
from pitrix.sealing import create_sealed, get_sealed
from pitrix.store.types import Op

# How long a bootstrap token buys a certificate once its mapping is written: the agent asks within
# seconds of its instance running; the register step (start, recover) writes it again.
BOOTSTRAP_TOKEN_TTL = 900.0


async def bootstrap_token(ctx: JobContext, node_id: str) -> str:
    """The node's one secret for fetching its first certificate, stored before any VM holds it.

    One per node incarnation: a replaced node (recover) gets a new one, see forget_instances.
    """
    key = token_key(ctx.cid, node_id)
    token = await get_sealed(ctx.store, key, ctx.sealer)
    if token is None:
        token = await create_sealed(ctx.store, key, secrets.token_urlsafe(32), ctx.sealer)
    return token.decode()


async def fresh_token(ctx: JobContext, node_id: str) -> str:
    """A new bootstrap token for the node, replacing the one it had (channel ssh: pushed with
    the agent's files, so an agent whose certificate lapsed while stopped can fetch another)."""
    token = secrets.token_urlsafe(32)
    key = token_key(ctx.cid, node_id)
    await ctx.write(Op("put", key, ctx.sealer.seal(token, key).encode()))  # sealed at rest, as every token
    return token


def token_fields(token: str) -> dict[str, Any]:
    """A mapping's bootstrap fields: the token's hash and the moment it stops buying."""
    return {
        "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "bootstrap_expires": time.time() + BOOTSTRAP_TOKEN_TTL,
    }


def mapping(ctx: JobContext, node: Node) -> dict[str, Any]:
    """What metad resolves the node's instance to (its /self view), without bootstrap fields."""
    return {
        "instance_id": node.instance_id,
        "cluster_id": ctx.cid,
        "role": node.role,
        "ip": node.ip,
        "owner": ctx.cluster.owner,
    }


def metad_order(urls: list[str], cid: str, node_id: str) -> list[str]:
    """Every metad member's URL, starting at one chosen by the node: an agent stays on its first
    member while it answers, so if every agent started at member 0 that member would carry all
    the long-polls. Chosen by a hash of the node's name, so a re-run writes the same files."""
    if len(urls) < 2 or not node_id:
        return list(urls)
    first = zlib.crc32(f"{cid}/{node_id}".encode()) % len(urls)
    return urls[first:] + urls[:first]


def agent_files(
    ctx: JobContext,
    role_name: str,
    token: str = "",
    cert_pem: bytes = b"",
    key_pem: bytes = b"",
    node_id: str = "",
) -> dict[str, bytes]:
    """What the node's agent is configured with: userdata writes it, or SSH pushes it."""
    role = ctx.cluster.app.role(role_name)
    check = role.health_check
    return userdata.agent_files(
        # every member's, the agent failing over between them; each node starts at its own
        metad_order(ctx.metadata.instance_urls, ctx.cid, node_id),
        # metad's server certificate is signed by its issuer, known since its metad got it.
        ca_pem=ctx.metadata.issuer_cert_pem if ctx.tls else b"",
        bootstrap_token=token,
        cert_pem=cert_pem,
        key_pem=key_pem,
        heartbeat_interval=ctx.heartbeat_interval,
        health_cmd=check.cmd if check else "",
        health_interval=check.interval if check else 10.0,
        templates=role.templates,
        profile=ctx.cluster.app.profile,
    )
