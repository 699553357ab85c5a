"""OpenStackProvider through openstacksdk against the simulator's Keystone and Nova: real VMs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import openstack
import pytest
import structlog
from provider_harness import simulator_clouds

from pitrix.providers.base import Instance, InstanceSpec, ProviderError
from pitrix.providers.openstack import OpenStackProvider
from pitrix.providers.openstack.provider import choose_flavor
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.ssh import SshError
from pitrix.ssh import connect as ssh_connect
from simulator.cloud import Simulator
from simulator.testing import Beacon, daemon_userdata, pid_alive, random_network


@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Simulator]:
    simulator = Simulator(Path(tmp_path_factory.mktemp("openstack")) / "sim", network=random_network())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
def runtime(sim: Simulator) -> dict[str, Any]:
    return simulator_clouds(sim)["openstack"].runtime


@pytest.fixture
def cid() -> str:
    return "os" + secrets.token_hex(4)


@pytest.fixture
async def provider(runtime: dict[str, Any], cid: str) -> AsyncIterator[OpenStackProvider]:
    client = OpenStackProvider.from_runtime(runtime)
    try:
        yield client
    finally:
        leftovers = await client.describe_instances(name_prefix=cid)
        await client.terminate_instances([i.instance_id for i in leftovers])
        await client.close()


def connection(runtime: dict[str, Any]) -> openstack.connection.Connection:
    return openstack.connection.Connection(
        auth={
            "auth_url": runtime["auth_url"],
            "username": runtime["username"],
            "password": runtime["password"],
            "project_name": "pitrix",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        auth_type="password",
    )


async def ssh_when_listening(
    ip: str, port: int, key: asyncssh.SSHKey, timeout: float = 30.0
) -> asyncssh.SSHClientConnection:
    """Connect once the VM's SSH server listens: the simulator reports "running" just before it does."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.02
    while True:
        try:
            return await asyncio.wait_for(
                asyncssh.connect(ip, port, username="root", client_keys=[key], known_hosts=None), timeout
            )
        except ConnectionRefusedError:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def test_servers_are_real_vms_running_their_user_data(
    sim: Simulator, provider: OpenStackProvider, beacon: Beacon, cid: str
) -> None:
    [created] = await provider.run_instances(
        [InstanceSpec(name=f"{cid}-n1", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))]
    )
    [running] = await provider.wait_running([created.instance_id], timeout=30)
    iid, pid, _, address = (await beacon.next(timeout=30)).split()
    assert iid == created.instance_id and address == f"{running.private_ip}:8000"
    assert running.ssh_port == 2222  # from the runtime: the simulator's SSH port
    reader, writer = await asyncio.wait_for(asyncio.open_connection(running.private_ip, 8000), 10)
    assert await asyncio.wait_for(reader.read(), 10) == iid.encode()
    writer.close()
    # The same VM through the QingCloud API: one fleet, two faces.
    qingcloud = QingCloudProvider.from_runtime(sim.runtime())
    try:
        [seen] = await qingcloud.describe_instances(instance_ids=[iid])
        assert seen.name == f"{cid}-n1" and seen.private_ip == running.private_ip
    finally:
        await qingcloud.close()
    await provider.terminate_instances([iid])
    assert not pid_alive(int(pid))
    assert not (sim.state_dir / "vms" / iid).exists()


async def test_flavor_tags_network_and_key_pair(
    runtime: dict[str, Any], provider: OpenStackProvider, cid: str
) -> None:
    conn = connection(runtime)
    # conn.compute itself talks to the simulator (version discovery): only ever in a worker thread.
    keypair = await asyncio.to_thread(lambda: conn.compute.create_keypair(name=cid))
    private_key = asyncssh.import_private_key(keypair.private_key)
    try:
        [created] = await provider.run_instances(
            [
                InstanceSpec(
                    name=f"{cid}-n1",
                    image="pitrix-metadata",
                    cpu=2,
                    memory=3000,
                    key_pair=cid,
                    network="net-blue",
                    tags={"pitrix:cluster": cid, "pitrix:owner": "usr-9"},
                )
            ]
        )
        [running] = await provider.wait_running([created.instance_id], timeout=30)
        assert running.raw["flavor"]["id"] == "c2m4096"
        assert running.raw["key_name"] == cid
        # The key pair Nova made opens the VM's SSH server.
        async with await ssh_when_listening(running.private_ip, running.ssh_port, private_key) as ssh:
            result = await asyncio.wait_for(ssh.run("echo pitrix", check=True), 30)
        assert str(result.stdout).strip() == "pitrix"
        assert list(running.raw["addresses"]) == ["net-blue"]
        assert running.tags == {"pitrix:cluster": cid, "pitrix:owner": "usr-9"}
        found = await provider.describe_instances(tags={"pitrix:owner": "usr-9", "pitrix:cluster": cid})
        assert [i.instance_id for i in found] == [created.instance_id]
        assert await provider.describe_instances(tags={"pitrix:owner": "someone-else"}) == []
        with pytest.raises(ProviderError, match="key_name") as error:
            await provider.run_instances([InstanceSpec(name=f"{cid}-n2", image="demo", key_pair="nope")])
        assert error.value.code == "http-400" and not error.value.transient
        await provider.terminate_instances([created.instance_id])
    finally:
        await asyncio.to_thread(lambda: conn.compute.delete_keypair(cid))
        await asyncio.to_thread(conn.close)


async def test_a_clouds_yaml_entry_is_enough(
    sim: Simulator, runtime: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  sim:\n    auth:\n"
        f"      auth_url: {runtime['auth_url']}\n      username: {runtime['username']}\n"
        f"      password: {runtime['password']}\n      project_name: pitrix\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    provider = OpenStackProvider.from_runtime({"cloud": "sim"})
    try:
        assert isinstance(await provider.describe_instances(), list)
    finally:
        await provider.close()


async def test_credentials_are_never_logged(runtime: dict[str, Any], cid: str) -> None:
    with structlog.testing.capture_logs() as logs:
        provider = OpenStackProvider.from_runtime(runtime)
        try:
            [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image="demo")])
            await provider.terminate_instances([created.instance_id])
        finally:
            await provider.close()
    assert logs and runtime["password"] not in repr(logs)


def test_from_runtime_errors_name_the_field() -> None:
    with pytest.raises(ProviderError, match="missing auth_url, password"):
        OpenStackProvider.from_runtime({"username": "u"})
    with pytest.raises(ProviderError, match="auth_url must be http"):
        OpenStackProvider.from_runtime({"auth_url": "keystone:5000", "username": "u", "password": "p"})
    with pytest.raises(ProviderError, match="ssh_port"):
        OpenStackProvider.from_runtime(
            {"auth_url": "http://127.0.0.1:1", "username": "u", "password": "p", "ssh_port": 0}
        )
    with pytest.raises(ProviderError, match="project_name must be a string"):
        OpenStackProvider.from_runtime(
            {"auth_url": "http://127.0.0.1:1", "username": "u", "password": "p", "project_name": 3}
        )


async def test_unreachable_keystone_is_retryable() -> None:
    provider = OpenStackProvider.from_runtime(
        {"auth_url": "http://127.0.0.1:9/v3", "username": "u", "password": "p", "attempts": 2}
    )
    try:
        with pytest.raises(ProviderError) as error:
            await provider.describe_instances()
    finally:
        await provider.close()
    assert error.value.transient and error.value.code == "connect"


def test_flavor_choice_is_the_smallest_that_fits() -> None:
    flavors = [
        {"id": "big", "name": "big", "vcpus": 8, "ram": 16384, "disk": 80},
        {"id": "wide", "name": "wide", "vcpus": 2, "ram": 8192, "disk": 20},
        {"id": "small", "name": "small", "vcpus": 2, "ram": 2048, "disk": 40},
        {"id": "small-disk", "name": "small-disk", "vcpus": 2, "ram": 2048, "disk": 10},
    ]
    assert choose_flavor(flavors, 1, 1024) == "small-disk"
    assert choose_flavor(flavors, 2, 4096) == "wide"
    assert choose_flavor(flavors, 3, 1) == "big"
    with pytest.raises(ProviderError, match="no flavor has 9 vCPUs") as error:
        choose_flavor(flavors, 9, 1)
    assert error.value.code == "flavor"


# -- the simulator's OpenStack API at the HTTP level ---------------------------------------------------


async def token(session: aiohttp.ClientSession, sim: Simulator, password: str | None = None) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": sim.credentials["access_key_id"],
                        "domain": {"name": "Default"},
                        "password": password or sim.credentials["secret_access_key"],
                    }
                },
            },
            "scope": {"project": {"name": "pitrix", "domain": {"name": "Default"}}},
        }
    }
    async with session.post(f"{sim.url}/identity/v3/auth/tokens", json=body) as response:
        if response.status != 201:
            raise AssertionError(f"{response.status}: {await response.text()}")
        catalog = (await response.json())["token"]["catalog"]
        assert {s["type"] for s in catalog} == {"identity", "compute", "image", "block-storage", "network"}
        return response.headers["X-Subject-Token"]


async def test_api_refuses_without_a_valid_token_or_password(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.url}/compute/v2.1/servers") as response:
            assert response.status == 401
            assert (await response.json())["unauthorized"]["code"] == 401
        with pytest.raises(AssertionError, match="401"):
            await token(session, sim, password="wrong")
        async with session.post(f"{sim.url}/identity/v3/auth/tokens", json={"auth": {}}) as response:
            assert response.status == 400
        async with session.get(f"{sim.url}/identity/v3") as response:
            assert (await response.json())["version"]["id"].startswith("v3")


async def test_api_pages_servers_and_checks_requests(sim: Simulator, cid: str) -> None:
    nova = f"{sim.url}/compute/v2.1"
    async with aiohttp.ClientSession() as session:
        headers = {"X-Auth-Token": await token(session, sim)}
        ids = []
        for n in range(3):
            server = {"name": f"{cid}-n{n}", "imageRef": "demo", "flavorRef": "c1m512"}
            async with session.post(f"{nova}/servers", json={"server": server}, headers=headers) as response:
                assert response.status == 202
                ids.append((await response.json())["server"]["id"])
        try:
            pages: list[list[str]] = []
            url: str | None = f"{nova}/servers/detail?name=^{cid}-&limit=2"
            while url:
                async with session.get(url, headers=headers) as response:
                    body = await response.json()
                pages.append([s["id"] for s in body["servers"]])
                url = next(
                    (link["href"] for link in body.get("servers_links", []) if link["rel"] == "next"), None
                )
            assert pages == [ids[:2], ids[2:]]
            bad = {"name": "x", "imageRef": "demo", "flavorRef": "c1m512", "user_data": "%%%"}
            async with session.post(f"{nova}/servers", json={"server": bad}, headers=headers) as response:
                assert (
                    response.status == 400 and "base 64" in (await response.json())["badRequest"]["message"]
                )
            bad = {"name": "x", "imageRef": "demo", "flavorRef": "c3m3"}
            async with session.post(f"{nova}/servers", json={"server": bad}, headers=headers) as response:
                assert response.status == 400 and "Flavor c3m3" in await response.text()
            action = f"{nova}/servers/{ids[0]}/action"
            async with session.post(action, json={"os-reboot": None}, headers=headers) as response:
                assert response.status == 400
            async with session.get(f"{nova}/servers/i-nevrwas0", headers=headers) as response:
                assert response.status == 404 and "itemNotFound" in await response.json()
        finally:
            for iid in ids:
                async with session.delete(f"{nova}/servers/{iid}", headers=headers) as response:
                    assert response.status == 204
                async with session.delete(f"{nova}/servers/{iid}", headers=headers) as response:
                    assert response.status in (204, 404)  # deleting already, or gone


async def test_import_key_pair_is_idempotent_and_opens_the_servers(
    runtime: dict[str, Any], provider: OpenStackProvider, cid: str
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key("openssh").decode().strip()
    conn = connection(runtime)
    try:
        assert await provider.import_key_pair(cid, public) == cid
        assert await provider.import_key_pair(cid, public) == cid
        pairs = await asyncio.to_thread(lambda: [k.name for k in conn.compute.keypairs() if k.name == cid])
        assert pairs == [cid]
        [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image="demo", key_pair=cid)])
        [running] = await provider.wait_running([created.instance_id], timeout=30)
        async with await ssh_when_listening(running.private_ip, running.ssh_port, key) as ssh:
            result = await asyncio.wait_for(ssh.run("echo imported", check=True), 30)
        assert str(result.stdout).strip() == "imported"
    finally:
        await asyncio.to_thread(lambda: conn.compute.delete_keypair(cid, ignore_missing=True))
        await asyncio.to_thread(conn.close)


async def test_console_shows_the_host_key_that_ssh_pins(
    sim: Simulator, runtime: dict[str, Any], provider: OpenStackProvider, cid: str
) -> None:
    """Nova describes no host key; the console does (cloud-init's block), and pitrix.ssh pins it."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    await provider.import_key_pair(cid, key.export_public_key("openssh").decode())
    conn = connection(runtime)
    try:
        [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image="demo", key_pair=cid)])
        [running] = await provider.wait_running([created.instance_id], timeout=30)
        assert "ssh_host_key" not in running.raw
        keys = await provider.host_keys(running)
        qingcloud = QingCloudProvider.from_runtime(sim.runtime())
        try:
            [seen] = await qingcloud.describe_instances(instance_ids=[running.instance_id])
        finally:
            await qingcloud.close()
        assert keys == [seen.raw["ssh_host_key"]]
        async with await ssh_connect(running, key, keys=provider.host_keys) as ssh:
            result = await asyncio.wait_for(ssh.run("echo pinned", check=True), 30)
        assert str(result.stdout).strip() == "pinned"
        # Another key on the console than the server's: refused, never trusted.
        other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()

        async def lying(_: Instance) -> list[str]:
            return [other]

        async def silent(_: Instance) -> list[str]:
            return []

        with pytest.raises(SshError, match="not the one the cloud published"):
            await ssh_connect(running, key, keys=lying, timeout=10)
        with pytest.raises(SshError, match="showed no SSH host key"):
            await ssh_connect(running, key, keys=silent, timeout=1)
        # The raw action: the last lines only with length; bad lengths are 400s naming it.
        text = await asyncio.to_thread(
            lambda: conn.compute.get_server_console_output(running.instance_id)["output"]
        )
        assert keys[0] in text
        last = await asyncio.to_thread(
            lambda: conn.compute.get_server_console_output(running.instance_id, length=1)["output"]
        )
        assert last == text.splitlines(keepends=True)[-1]
        response = await asyncio.to_thread(
            lambda: conn.compute.post(
                f"/servers/{running.instance_id}/action", json={"os-getConsoleOutput": {"length": -5}}
            )
        )
        assert response.status_code == 400 and "length" in response.json()["badRequest"]["message"]
        await provider.terminate_instances([running.instance_id])
        assert await provider.host_keys(running) == []  # gone: 404, no keys
    finally:
        await asyncio.to_thread(lambda: conn.compute.delete_keypair(cid, ignore_missing=True))
        await asyncio.to_thread(conn.close)
