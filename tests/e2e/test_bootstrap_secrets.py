"""No lasting secret in userdata or in a world-readable file, on a real create on the simulator.

The metadata VM's userdata carries no private key (its metad made the issuer's key), the tokens
of the metadata VM and of the instances are spent once used, and every file holding one is
readable by its owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
import tomllib

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app

from pitrix import pki
from pitrix.runtime.keys import metadata_key
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.records import Cluster, MetadataCluster
from pitrix.runtime.userdata import AGENT_CONFIG, METAD_STATE, METAD_TOKEN
from pitrix.store.watch import watch_key
from simulator.vm import USERDATA_PATH

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 120.0
BANNER = "".join(f"# {n:02} {'=' * 66}\n" for n in range(60)) + '{{getv "/host/instance_id"}}\n'


def _mode(cloud: Cloud, instance_id: str, path: str) -> int:
    return stat.S_IMODE((cloud.workdir / "sim/vms" / instance_id / "root" / path.lstrip("/")).stat().st_mode)


async def test_userdata_holds_no_key_and_tokens_are_spent(cloud: Cloud) -> None:
    service = cloud.service
    # The runtime's network (a vxnet the simulator was told of): every VM of the runtime joins it.
    async with cloud.http.post(cloud.sim_url + "/_sim/vxnets", json={"vxnet_id": "vxnet-e2e"}) as made:
        assert made.status == 201, await made.text()
    await service.update_runtime("sim", {"network": "vxnet-e2e"})
    # A template this large takes web's userdata past the 4 KiB of a QingCloud exec value: it boots
    # from a tar attachment (docs/providers.md), the lb from exec.
    app = demo_app()
    app["roles"][0]["templates"] = [
        {"name": "banner", "dest": "/etc/app/banner", "keys": ["/host"], "text": BANNER}
    ]
    cluster, _ = await service.create_cluster(owner="o1", runtime="sim", app=app, counts={"web": 1, "lb": 1})

    async def ended(c: Cluster) -> bool:
        return c.state in ("active", "failed")

    done = await service.wait(cluster.id, ended, JOB_TIMEOUT)
    assert done.state == "active", done.last_error
    record = await service.metadata.get("o1", "sim")
    assert record is not None and record.issuer_pem and not record.holds_issuer_key
    assert not record.bootstrap_sha256 and record.bootstrap_consumed > 0  # spent, and forgotten

    # The metadata VM: public certificates and a spent token in its userdata, no private key.
    userdata = cloud.vm_file(record.instance_id, USERDATA_PATH)
    assert "PRIVATE KEY" not in userdata and "--issuer-bootstrap-token-file" in userdata
    assert _mode(cloud, record.instance_id, USERDATA_PATH) == 0o700
    assert not (cloud.workdir / "sim/vms" / record.instance_id / "root" / METAD_TOKEN.lstrip("/")).exists()
    assert _mode(cloud, record.instance_id, METAD_STATE + "/issuer/issuer.key") == 0o600
    issuer = pki.cert_from_pem(record.issuer_cert_pem)
    (await service.metadata.authority()).root.verify(issuer)

    # An instance: its token is in a 0600 config, and replaying it buys nothing.
    web = next(n for n in await service.nodes(cluster.id) if n.role == "web")
    assert _mode(cloud, web.instance_id, AGENT_CONFIG) == 0o600
    assert _mode(cloud, web.instance_id, USERDATA_PATH) == 0o700
    assert cloud.vm_file(web.instance_id, "/etc/app/banner").endswith(f"\n{web.instance_id}\n")
    provider = await service.provider_for("sim")
    placed = await provider.describe_instances(instance_ids=[record.instance_id, web.instance_id])
    assert [i.raw["vxnets"][0]["vxnet_id"] for i in placed] == ["vxnet-e2e", "vxnet-e2e"]
    token = tomllib.loads(cloud.vm_file(web.instance_id, AGENT_CONFIG))["pitrix"]["bootstrap_token"]
    ca = cloud.workdir / "issuer.pem"
    ca.write_bytes(record.issuer_cert_pem)
    csr = pki.make_csr(pki.generate_key(), pki.Subject("bootstrap")).decode()
    connector = aiohttp.TCPConnector(ssl=pki.client_context(ca), local_addr=(web.ip, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(record.instance_url + "/self/bootstrap", json={"token": token, "csr": csr}) as response,
    ):
        answer = json.loads(await response.text())
        assert (response.status, answer.get("reason")) == (409, "token_used"), answer


@pytest.mark.parametrize("crash_when", ["vm_booted", "issuer_signed", "token_expired"])
async def test_a_pitrixd_crash_mid_issuer_bootstrap_resumes(cloud: Cloud, crash_when: str) -> None:
    """pitrixd dies while a metadata VM gets its issuer; the next pitrixd finishes with that VM,
    or, if the VM's token ran out unused meanwhile, with a new VM (nothing could bootstrap the old)."""
    service = cloud.service
    key = metadata_key("o2", "sim")

    def reached(record: MetadataCluster) -> bool:
        return record.bootstrap_consumed > 0 if crash_when == "issuer_signed" else bool(record.instance_id)

    first = MetadataClusters(
        service.store, service.provider_for, sealer=service.sealer, keypairs=service.keypairs
    )
    ensure = asyncio.create_task(first.ensure("o2", "sim"))
    try:
        async for batch in watch_key(service.store, key, 1):
            values = [e.value for e in batch.events if e.type == "put"] + [kv.value for kv in batch.state]
            if any(reached(MetadataCluster.opened(v, service.sealer)) for v in values):
                break
    finally:
        ensure.cancel()  # the crash: whatever it was doing stops here
        with contextlib.suppress(asyncio.CancelledError):
            await ensure
        await first.close()
    stale = MetadataCluster.opened((await service.store.get(key)).value, service.sealer)  # type: ignore[union-attr]
    if crash_when == "token_expired":
        expired = {"issuer_pem": "", "bootstrap_consumed": 0.0, "bootstrap_expires": time.time() - 1}
        await service.store.put(key, stale.model_copy(update=expired).sealed(service.sealer))
    second = MetadataClusters(
        service.store, service.provider_for, sealer=service.sealer, keypairs=service.keypairs
    )
    try:
        record = await second.ensure("o2", "sim")
        assert record.status == "ready" and record.issuer_pem and not record.bootstrap_sha256
        assert (await second.client(record).healthz())["ok"] is True
        vms = [vm for vm in await cloud.ledger() if vm["name"] == record.name and not vm["terminated"]]
        assert [vm["instance_id"] for vm in vms] == [record.instance_id]  # one VM, never two
        if crash_when == "token_expired":
            assert record.instance_id != stale.instance_id
        else:
            assert record.instance_id == stale.instance_id
    finally:
        await second.close()
