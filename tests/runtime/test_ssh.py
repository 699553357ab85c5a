"""pitrixd's SSH: its key pair (etcd, then the cloud) and sessions with the host key pinned."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket

import asyncssh
import pytest

from pitrix.providers.base import Instance, InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime.keypairs import KeyPairs, ensure_key_pair, keypair_key, keypair_name, load_private_key
from pitrix.sealing import Sealer
from pitrix.ssh import SshError, SshSessions, connect
from pitrix.store import Store
from simulator.cloud import Simulator


async def running_vm(provider: QingCloudProvider, key_pair: str) -> Instance:
    [made] = await provider.run_instances(
        [InstanceSpec(name="ssh-" + secrets.token_hex(3), image="demo", key_pair=key_pair)]
    )
    [running] = await provider.wait_running([made.instance_id], timeout=60)
    return running


@pytest.fixture
async def owner() -> str:
    return "usr-" + secrets.token_hex(3)


async def test_key_pair_is_stored_once_and_imported_once(
    store: Store, provider: QingCloudProvider, owner: str
) -> None:
    sealer = Sealer.generate()
    pairs = KeyPairs(store, sealer)
    first, second = await asyncio.gather(pairs.get(provider, owner, "sim"), pairs.get(provider, owner, "sim"))
    assert first.public_line == second.public_line and first.public_line.startswith("ssh-ed25519 ")
    assert (await store.get(keypair_key(owner, "sim"))) is not None
    again = await ensure_key_pair(store, sealer, provider, owner, "sim")
    assert again.cloud_id == first.cloud_id
    imported = await provider.describe_key_pairs(name=keypair_name(owner, "sim"))
    assert [p.keypair_id for p in imported] == [first.cloud_id]
    # A replica racing its own import against ours still uses the same private key.
    racer = await ensure_key_pair(store, sealer, provider, owner, "sim")
    assert racer.public_line == first.public_line
    # Another runtime of the same owner is another pair.
    other = await load_private_key(store, sealer, owner, "other")
    assert other.export_public_key("openssh") != first.private_key.export_public_key("openssh")


async def test_qingcloud_import_refuses_a_name_holding_another_key(provider: QingCloudProvider) -> None:
    name = "pitrix-" + secrets.token_hex(3)
    mine = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    theirs = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    kid = await provider.import_key_pair(name, mine)
    assert await provider.import_key_pair(name, mine) == kid
    with pytest.raises(ProviderError, match=name):
        await provider.import_key_pair(name, theirs)


async def test_sessions_run_and_put_files_with_the_pinned_host_key(
    store: Store, provider: QingCloudProvider, sim: Simulator, owner: str
) -> None:
    sealer = Sealer.generate()
    pair = await ensure_key_pair(store, sealer, provider, owner, "sim")
    vm = await running_vm(provider, pair.cloud_id)
    async with SshSessions(pair.private_key, keys=provider.host_keys) as sessions:
        status, output = await sessions.run(vm, "echo hello; exit 3")
        assert (status, output) == (3, "hello\n")
        await sessions.put_file(vm, "/etc/pitrix/secret.pem", b"\x00secret\n", mode=0o600)
        first = await sessions.connection(vm)
        status, output = await sessions.run(vm, 'cat "$PITRIX_VM_ROOT"/etc/pitrix/secret.pem')
        assert (status, output) == (0, "\x00secret\n")
        assert await sessions.connection(vm) is first  # one connection per instance, reused
        # AES-GCM is asked for first (pitrix.ssh.ENCRYPTION_ALGS: the cheaper cipher per packet).
        assert first.get_extra_info("send_cipher") == "aes256-gcm@openssh.com"
    written = sim.state_dir / "vms" / vm.instance_id / "root" / "etc/pitrix/secret.pem"
    assert written.read_bytes() == b"\x00secret\n"
    assert written.stat().st_mode & 0o777 == 0o600


async def test_a_wrong_or_missing_host_key_is_refused(
    store: Store, provider: QingCloudProvider, owner: str
) -> None:
    sealer = Sealer.generate()
    pair = await ensure_key_pair(store, sealer, provider, owner, "sim")
    vm = await running_vm(provider, pair.cloud_id)
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    impostor = dataclasses.replace(vm, raw={**vm.raw, "ssh_host_key": stranger})
    with pytest.raises(SshError, match="not the one the cloud published"):
        await connect(impostor, pair.private_key, timeout=30, keys=provider.host_keys)

    async def silent(_: Instance) -> list[str]:
        return []

    with pytest.raises(SshError, match="showed no SSH host key"):
        await connect(vm, pair.private_key, timeout=1, keys=silent)
    # A description taken before the first boot has no key yet: the provider reads it again.
    unpinned = dataclasses.replace(vm, raw={k: v for k, v in vm.raw.items() if k != "ssh_host_key"})
    assert await provider.host_keys(unpinned) == [vm.raw["ssh_host_key"].strip()]
    conn = await connect(unpinned, pair.private_key, timeout=30, keys=provider.host_keys)
    conn.close()
    # And a key the instance was not created with is refused by the server.
    with pytest.raises(SshError, match="refused"):
        await connect(vm, asyncssh.generate_private_key("ssh-ed25519"), timeout=30, keys=provider.host_keys)


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about reaching the server at all


async def _nobody(process: asyncssh.SSHServerProcess[str]) -> None:
    process.exit(0)


async def test_a_refused_connection_is_retried_until_the_server_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    vm = Instance(instance_id="i-late", name="late", status="running", private_ip="127.0.0.1", ssh_port=port)

    async def published(_: Instance) -> list[str]:
        return [host_key.export_public_key("openssh").decode()]

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)  # nothing listens yet
    attempted = asyncio.Event()

    def knock(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempted.set()  # the client came and found no SSH server: it must come back
        writer.close()

    client = asyncio.create_task(
        connect(vm, asyncssh.generate_private_key("ssh-ed25519"), timeout=60, keys=published)
    )
    early = await asyncio.start_server(knock, "127.0.0.1", port)
    await asyncio.wait_for(attempted.wait(), 30)
    early.close()
    await early.wait_closed()
    server = await asyncssh.listen(
        "127.0.0.1", port, server_host_keys=[host_key], server_factory=_Server, process_factory=_nobody
    )
    try:
        conn = await asyncio.wait_for(client, 60)
        status = (await conn.run("true", check=False)).exit_status
        assert status == 0
        conn.close()
    finally:
        server.close()
        await server.wait_closed()
