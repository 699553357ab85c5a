"""pitrixd's SSH key pairs: one ed25519 pair per owner × runtime, kept in etcd.

The private key is written to etcd (create-if-absent) before the cloud hears of its public half,
so every replica and every restart uses the same pair, and no instance is ever made with a key
nobody holds. The public key is imported into the cloud under a deterministic name, looked up
before it is created. Two replicas importing at the very same moment into a cloud whose names
are not unique (QingCloud) may leave two pairs holding the same public key: harmless, as either
opens the instances, and later look-ups settle on the same one. Within one pitrixd, its one
:class:`KeyPairs` (held by the RuntimeService) reads each pair from etcd once and imports it once
per provider.

    /keypairs/<owner>/<runtime>     the private key, OpenSSH format, sealed (pitrix.sealing)

A pair stored in clear by an older pitrixd is read as it is and sealed in place.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pitrix.providers.base import Provider
from pitrix.runtime.keys import keypair_key
from pitrix.sealing import Sealer, create_sealed, get_sealed
from pitrix.store import Store

if TYPE_CHECKING:
    import asyncssh


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


async def load_private_key(store: Store, sealer: Sealer, owner: str, runtime: str) -> asyncssh.SSHKey:
    """The owner's private key on the runtime, generated and stored (sealed) the first time."""
    import asyncssh  # only here: a pitrixd that makes no instance never loads the SSH stack

    key = keypair_key(owner, runtime)
    pem = await get_sealed(store, key, sealer)
    if pem is None:
        generated = asyncssh.generate_private_key("ssh-ed25519", comment=f"pitrixd {owner}@{runtime}")
        # create-if-absent: the loser reads the winner's
        pem = await create_sealed(store, key, generated.export_private_key("openssh"), sealer)
    return asyncssh.import_private_key(pem)


async def ensure_key_pair(
    store: Store, sealer: Sealer, provider: Provider, owner: str, runtime: str
) -> RuntimeKeyPair:
    """The key pair, stored in etcd and imported into the cloud (both idempotent)."""
    private = await load_private_key(store, sealer, owner, runtime)
    name = keypair_name(owner, runtime)
    public = private.export_public_key("openssh").decode().strip()
    cloud_id = await provider.import_key_pair(name, public)
    return RuntimeKeyPair(name=name, cloud_id=cloud_id, private_key=private)


class KeyPairs:
    """The key pairs one pitrixd uses: one instance per RuntimeService, shared by every step.

    Each pair is read from etcd (or generated and stored, create-if-absent, so replicas still agree)
    once per process, and imported into the cloud once per provider object: a runtime redefined
    gets a new provider (``put_runtime``), whose cloud may not hold the pair yet, so it is imported
    again there. A failed import is not remembered; the next use tries again.
    """

    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        self._private: dict[tuple[str, str], asyncssh.SSHKey] = {}
        self._imported: dict[tuple[str, str], tuple[Provider, RuntimeKeyPair]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, provider: Provider, owner: str, runtime: str) -> RuntimeKeyPair:
        """The owner's pair on the runtime, stored in etcd and known to ``provider``'s cloud."""
        key = (owner, runtime)
        async with self._locks.setdefault(key, asyncio.Lock()):
            imported = self._imported.get(key)
            if imported is not None and imported[0] is provider:
                return imported[1]
            private = self._private.get(key)
            if private is None:
                private = self._private[key] = await load_private_key(self.store, self.sealer, owner, runtime)
            name = keypair_name(owner, runtime)
            public = private.export_public_key("openssh").decode().strip()
            cloud_id = await provider.import_key_pair(name, public)
            pair = RuntimeKeyPair(name=name, cloud_id=cloud_id, private_key=private)
            self._imported[key] = (provider, pair)
            return pair
