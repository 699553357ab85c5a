"""pitrixd's SSH key pairs: one ed25519 pair per owner × runtime, kept in etcd.

The private key is written to etcd (create-if-absent) before the cloud hears of its public half,
so every replica and every restart uses the same pair, and no instance is ever made with a key
nobody holds. The public key is imported into the cloud under a deterministic name, looked up
before it is created. Two replicas importing at the very same moment into a cloud whose names
are not unique (QingCloud) may leave two pairs holding the same public key: harmless, as either
opens the instances, and later look-ups settle on the same one. Within one pitrixd,
:class:`KeyPairs` imports each pair once.

    /keypairs/<owner>/<runtime>     the private key, OpenSSH format
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import asyncssh

from pitrix.providers.base import Provider
from pitrix.store import Store


def keypair_key(owner: str, runtime: str) -> str:
    return f"/keypairs/{owner}/{runtime}"


def keypair_name(owner: str, runtime: str) -> str:
    """The key pair's deterministic name in the cloud."""
    safe = re.sub(r"[^a-z0-9-]", "-", f"{owner}-{runtime}".lower())
    return f"pitrix-{safe}"


@dataclass(frozen=True, slots=True)
class RuntimeKeyPair:
    name: str
    cloud_id: str  # what InstanceSpec.key_pair names it by in this cloud
    private_key: asyncssh.SSHKey

    @property
    def public_line(self) -> str:
        return self.private_key.export_public_key("openssh").decode().strip()


async def load_private_key(store: Store, owner: str, runtime: str) -> asyncssh.SSHKey:
    """The owner's private key on the runtime, generated and stored the first time."""
    key = keypair_key(owner, runtime)
    kv = await store.get(key)
    if kv is None:
        generated = asyncssh.generate_private_key("ssh-ed25519", comment=f"pitrixd {owner}@{runtime}")
        await store.create(key, generated.export_private_key("openssh"))  # the loser reads the winner's
        kv = await store.get(key)
        if kv is None:
            raise RuntimeError(f"key pair {key}: vanished right after it was stored")
    return asyncssh.import_private_key(kv.value)


async def ensure_key_pair(store: Store, provider: Provider, owner: str, runtime: str) -> RuntimeKeyPair:
    """The key pair, stored in etcd and imported into the cloud (both idempotent)."""
    private = await load_private_key(store, owner, runtime)
    name = keypair_name(owner, runtime)
    public = private.export_public_key("openssh").decode().strip()
    cloud_id = await provider.import_key_pair(name, public)
    return RuntimeKeyPair(name=name, cloud_id=cloud_id, private_key=private)


class KeyPairs:
    """The key pairs one pitrixd uses, each ensured once per process (the cloud is asked once)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[tuple[str, str], RuntimeKeyPair] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, provider: Provider, owner: str, runtime: str) -> RuntimeKeyPair:
        key = (owner, runtime)
        async with self._locks.setdefault(key, asyncio.Lock()):
            pair = self._known.get(key)
            if pair is None:
                pair = await ensure_key_pair(self.store, provider, owner, runtime)
                self._known[key] = pair
            return pair
