"""``passphraseless`` roles: one SSH key pair per cluster and role, shared by the role's nodes.

AppCenter packages (Hadoop, HBase, Storm...) let the nodes of a role SSH to each other as root
without a password: each node holds the role's private key as ``/root/.ssh/id_rsa`` and trusts its
public key in ``authorized_keys``; metadata shows the public key as ``/self/host/pub_key``.

The pair is made once, the first time a job of the cluster needs it, and kept sealed in pitrixd's
etcd (``keys.role_key_key``; create-if-absent, so replicas and a resumed job agree on one pair)
before any node receives it. Every job loads the cluster's pairs when it starts (:func:`load`), so
steps read them without waiting (:func:`public_key`, :func:`identity_script`).

The algorithm: ``ssh-rsa`` is an RSA key of ``RSA_BITS``. ``ssh-dsa`` asks for DSA, which OpenSSH
no longer accepts by default (disabled since 7.0, removed in 9.8): it gets RSA too, under the
file name packages look for, ``id_rsa`` (what ``ssh`` tries without being told).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pitrix.providers.base import Instance
from pitrix.runtime.keys import role_key_key
from pitrix.runtime.userdata import SSH_DIR, ssh_identity_script
from pitrix.sealing import create_sealed, get_sealed
from pitrix.ssh import SshError, SshSessions, quote

if TYPE_CHECKING:
    from pitrix.runtime.steps.context import JobContext

RSA_BITS = 3072
KEY_FILE = "id_rsa"


@dataclass(frozen=True, slots=True)
class RoleKey:
    """A role's pair as its nodes receive it."""

    private_pem: bytes  # OpenSSH format
    public_line: str  # ``ssh-rsa AAAA... pitrix <cid>/<role>``


def _generate(comment: str) -> bytes:
    import asyncssh  # only here: a pitrixd that makes no role key never loads the SSH stack

    key = asyncssh.generate_private_key("ssh-rsa", comment=comment, key_size=RSA_BITS)
    return key.export_private_key("openssh")


async def role_key(ctx: JobContext, role: str) -> RoleKey:
    """The role's pair from etcd, made and stored (sealed) first if it has none yet."""
    key = role_key_key(ctx.cid, role)
    pem = await get_sealed(ctx.store, key, ctx.sealer)
    if pem is None:
        made = await asyncio.to_thread(_generate, f"pitrix {ctx.cid}/{role}")
        pem = await create_sealed(ctx.store, key, made, ctx.sealer)  # the loser reads the winner's
    import asyncssh  # only here: a pitrixd that makes no role key never loads the SSH stack

    private = asyncssh.import_private_key(pem)
    return RoleKey(pem, private.export_public_key("openssh").decode().strip())


async def load(ctx: JobContext) -> None:
    """The pairs of the cluster's passphraseless roles into ``ctx.role_keys`` (made if new)."""
    for role in ctx.cluster.app.roles:
        if role.passphraseless and role.name not in ctx.role_keys:
            ctx.role_keys[role.name] = await role_key(ctx, role.name)


def public_key(ctx: JobContext, role: str) -> str:
    """The role's public key in ``authorized_keys`` form, or "" for a role without a pair
    (published as the host's ``pub_key``)."""
    found = ctx.role_keys.get(role)
    return found.public_line if found is not None else ""


def identity_script(ctx: JobContext, role: str) -> str:
    """Userdata shell giving a node of ``role`` the role's pair ("" for a role without one)."""
    found = ctx.role_keys.get(role)
    if found is None:
        return ""
    return ssh_identity_script(KEY_FILE, found.private_pem, found.public_line)


async def push_over_ssh(ctx: JobContext, role: str, ssh: SshSessions, instance: Instance) -> None:
    """Channel ssh: the same files as :func:`identity_script` writes, pushed; ``authorized_keys``
    keeps its lines (pitrixd's own key is one) and gains the role's once."""
    found = ctx.role_keys.get(role)
    if found is None:
        return
    await ssh.put_file(instance, f"{SSH_DIR}/{KEY_FILE}", found.private_pem, 0o600)
    await ssh.put_file(instance, f"{SSH_DIR}/{KEY_FILE}.pub", (found.public_line + "\n").encode(), 0o644)
    authorized = quote(f"{SSH_DIR}/authorized_keys")
    read = f"touch {authorized} && chmod 600 {authorized} && cat {authorized}"
    status, current = await ssh.run(instance, read)
    if status != 0:
        raise SshError(f"{instance.instance_id}: reading authorized_keys failed ({status}): {current[:200]}")
    if found.public_line not in current.splitlines():
        line = ("\n" if current and not current.endswith("\n") else "") + found.public_line + "\n"
        status, output = await ssh.run(instance, f"cat >> {authorized}", line.encode())
        if status != 0:
            raise SshError(f"{instance.instance_id}: authorizing the role key failed: {output.strip()}")
