"""One KeyPairs per pitrixd: each pair read from etcd once, imported once per provider."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from pitrix.providers.base import Failure, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime.keypairs import KeyPairs, keypair_key, keypair_name
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import KV, Store
from simulator.cloud import Simulator


class Counted(QingCloudProvider):
    """The real QingCloud provider, counting its imports; the first ``failures`` are refused."""

    imports = 0
    failures = 0

    async def import_key_pair(self, name: str, public_key: str) -> str:
        self.imports += 1
        if self.failures:
            self.failures -= 1
            raise ProviderError("refused for the test", failure=Failure.TRANSIENT)
        return await super().import_key_pair(name, public_key)


def counted(sim: Simulator) -> Counted:
    provider = Counted.from_runtime(sim.runtime())
    assert isinstance(provider, Counted)
    return provider


def count_reads(store: Store, monkeypatch: pytest.MonkeyPatch, key: str) -> list[str]:
    reads: list[str] = []
    real = store.get

    async def get(wanted: str) -> KV | None:
        if wanted == key:
            reads.append(wanted)
        return await real(wanted)

    monkeypatch.setattr(store, "get", get)
    return reads


async def test_each_pair_is_read_once_and_imported_once_per_provider(
    store: Store, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = "usr-" + secrets.token_hex(3)
    reads = count_reads(store, monkeypatch, keypair_key(owner, "sim"))
    pairs = KeyPairs(store, Sealer.generate())
    provider = counted(sim)
    try:
        got = await asyncio.gather(*(pairs.get(provider, owner, "sim") for _ in range(8)))
        assert len({p.public_line for p in got}) == 1 and len({p.cloud_id for p in got}) == 1
        assert provider.imports == 1
        assert len(reads) == 1  # one read, then the create (not read back): the first time only
        for _ in range(3):
            assert (await pairs.get(provider, owner, "sim")).cloud_id == got[0].cloud_id
        assert provider.imports == 1 and len(reads) == 1
        # A runtime redefined gets a new provider: imported again there, not read again.
        renewed = counted(sim)
        try:
            again = await pairs.get(renewed, owner, "sim")
            assert again.public_line == got[0].public_line and renewed.imports == 1 and len(reads) == 1
            assert again.cloud_id == got[0].cloud_id  # the same cloud: found by name, not re-made
        finally:
            await renewed.close()
        listed = await provider.describe_key_pairs(name=keypair_name(owner, "sim"))
        assert [p.keypair_id for p in listed] == [got[0].cloud_id]
    finally:
        await provider.close()


async def test_a_failed_import_is_tried_again(store: Store, sim: Simulator) -> None:
    owner = "usr-" + secrets.token_hex(3)
    pairs = KeyPairs(store, Sealer.generate())
    provider = counted(sim)
    provider.failures = 1
    try:
        with pytest.raises(ProviderError, match="refused for the test"):
            await pairs.get(provider, owner, "sim")
        pair = await pairs.get(provider, owner, "sim")
        assert provider.imports == 2 and pair.cloud_id
    finally:
        await provider.close()


async def test_replicas_agree_on_the_pair(store: Store, sim: Simulator) -> None:
    """Two pitrixd (two KeyPairs on one etcd) racing for a new owner end with one private key."""
    owner = "usr-" + secrets.token_hex(3)
    one, two = counted(sim), counted(sim)
    sealer = Sealer.generate()
    try:
        first, second = await asyncio.gather(
            KeyPairs(store, sealer).get(one, owner, "sim"), KeyPairs(store, sealer).get(two, owner, "sim")
        )
        assert first.public_line == second.public_line
    finally:
        await one.close()
        await two.close()


async def test_a_service_shares_one_keypairs(store: Store) -> None:
    service = RuntimeService(store, sealer=Sealer.generate())
    assert service.metadata.keypairs is service.keypairs
