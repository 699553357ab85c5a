"""A metadata cluster of three loses member VMs while an env rollout runs through it.

Short form: the first member's VM is terminated as the rollout starts (pitrixd writes through
another member, agents fail over); the job finishes, every node renders the last value (a
template following its own env), and the lost member is replaced: a new VM (the next generation
of its name) in the ledger, the record naming it, three members of one etcd cluster answering.
Long form (``CHAOS_LONG=1``): a scale while another member's VM is terminated (replaced too), a
rollout while member 0's etcd is SIGKILLed (its metad starts it again; nothing to replace), and
one while a member VM crashes with the cloud still calling it running (its silent metad gets it
replaced).

Debian's etcd 3.4 for the members (the wheel's 3.5.1 can lose writes in a multi-member cluster,
etcd issue 13766).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "e2e") not in sys.path:  # the simulated cloud and its helpers live with the e2e tests
    sys.path.insert(0, str(TESTS / "e2e"))

from chaos_ops import Tally  # noqa: E402
from e2e_cloud import Cloud, demo_app, simulated_cloud  # noqa: E402
from e2e_daemons import Child, live, runtime_definition  # noqa: E402
from test_lifecycle import expect  # noqa: E402

from pitrix.backoff import Backoff  # noqa: E402
from pitrix.runtime.metadata import MetadataClusters  # noqa: E402
from pitrix.runtime.records import MetadataCluster  # noqa: E402
from pitrix.runtime.recovery import RecoveryPolicy  # noqa: E402
from pitrix.runtime.steps.identity import metad_order  # noqa: E402
from pitrix.store import Store  # noqa: E402
from pitrix.store.embedded import BINARY_VARIABLE  # noqa: E402

pytestmark = pytest.mark.timeout(900)

SYSTEM_ETCD = Path("/usr/bin/etcd")
REPLACED_WITHIN = 180.0  # a bound, not a figure: detection, etcd's reconfiguration wait, a VM boot
GREETING = {
    "name": "greeting",
    "dest": "/etc/app/greeting.conf",
    "keys": ["/host"],
    "text": '{{getv "/host/env/greeting" "hello"}}\n',
}


def ha_runtime(sim: Child) -> dict[str, Any]:
    return {**runtime_definition(sim), "metadata_size": 3}


async def _replaced(metadata: MetadataClusters, lost: str) -> MetadataCluster:
    """The record once no member is the lost VM any more and the monitor found nothing amiss."""
    deadline = asyncio.get_running_loop().time() + REPLACED_WITHIN
    backoff = Backoff(0.1, 1.0)
    while True:
        record = await metadata.get("o", "sim")
        assert record is not None
        ids = {record.instance_id, *(m.instance_id for m in record.members)}
        if lost not in ids and "" not in ids and not record.condition:
            return record
        assert asyncio.get_running_loop().time() < deadline, f"member {lost} not replaced: {record}"
        await asyncio.sleep(backoff.next())


async def _whole(cloud: Cloud, record: MetadataCluster, lost: str) -> None:
    """Three members of one etcd cluster, each answering; the new VM live, the lost one not."""
    listed = await cloud.service.metadata.client(record).etcd_members()
    assert len(listed["members"]) == 3 and all(m["started"] for m in listed["members"]), listed
    names = {record.vm_name, *(m.name for m in record.members)}
    live_vms = {vm["name"]: vm["instance_id"] for vm in live(await cloud.ledger())}
    assert names <= set(live_vms) and lost not in live_vms.values()
    assert any("-g" in name for name in names)  # a new generation of a member's name
    for url in record.instance_urls:  # every member's metad answers, the new one included
        member = record.model_copy(update={"ip": url.split("//")[1].split(":")[0], "members": []})
        try:
            await cloud.service.metadata.client(member).healthz()
        finally:
            await cloud.service.metadata.close()


def _etcd_pid(cloud: Cloud, instance_id: str) -> int:
    """The etcd of one member VM (its pid record under the VM's metad state directory); 0 while
    there is none (its metad starting it again)."""
    record = cloud.workdir / "sim" / "vms" / instance_id / "root" / "var/lib/pitrix-metad/etcd.pid.json"
    try:
        return int(json.loads(record.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


async def _etcd_restarted(cloud: Cloud, record: MetadataCluster, instance_id: str, killed: int) -> None:
    """The member's metad ran a new etcd, and it is one of the three members again: the kill
    happened and was recovered from, not merely stepped around."""
    deadline = asyncio.get_running_loop().time() + REPLACED_WITHIN
    backoff = Backoff(0.1, 1.0)
    while True:
        pid = _etcd_pid(cloud, instance_id)
        if pid not in (0, killed):
            listed = await cloud.service.metadata.client(record).etcd_members()
            if len(listed["members"]) == 3 and all(m["started"] for m in listed["members"]):
                return
        assert asyncio.get_running_loop().time() < deadline, f"etcd of {instance_id} not back (pid {pid})"
        await asyncio.sleep(backoff.next())


async def test_an_env_rollout_through_the_loss_of_metadata_members(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, long_form: bool
) -> None:
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))  # the simulator's VMs inherit it
    tally = Tally()
    rollouts = 4 if long_form else 1
    # Node recovery off (nothing here is about nodes); metadata members looked at every second.
    policy = RecoveryPolicy(enabled=False, metadata_interval=1.0, metadata_silence=5.0)
    async with simulated_cloud(store, tmp_path, runtime=ha_runtime, recovery=policy) as cloud:
        service = cloud.service
        app = demo_app()
        app["roles"][0]["templates"] = [GREETING]
        cluster, _ = await service.create_cluster(
            owner="o", runtime="sim", app=app, counts={"web": 2, "lb": 0}
        )
        await expect(service, cluster.id, "active")
        tally.operations += 1
        record = await service.metadata.get("o", "sim")
        assert record is not None and len(record.members) == 2
        nodes = await service.nodes(cluster.id)
        for node in nodes:
            config = tomllib.loads(cloud.vm_file(node.instance_id, "/etc/pitrix/agent.toml"))
            # every member, to fail over between, each node starting at its own
            assert config["nodes"] == metad_order(record.instance_urls, cluster.id, node.node_id)
        provider = await service.provider_for("sim")
        faults = 0
        for n in range(1, rollouts + 1):
            value = f"hi-{n}"
            lost_vm = ""
            if n == 2:
                # Another member's VM is lost during a scale: replaced too.
                lost_vm = record.members[0].instance_id
                scale = asyncio.create_task(service.scale(cluster.id, "web", 3))
                await provider.terminate_instances([lost_vm])
                faults += 1
                await scale
                await expect(service, cluster.id, "active")
                tally.operations += 1
            rollout = asyncio.create_task(service.update_env(cluster.id, {"web": {"greeting": value}}))
            if n == 1:
                # The first member's VM is lost as the rollout starts: pitrixd writes through
                # another member, the agents that used it fail over; the monitor replaces it.
                lost_vm = record.instance_id
                await provider.terminate_instances([lost_vm])
                faults += 1
            elif n == 3:
                # With three members, member 0's etcd (the member pitrixd asks first) is
                # SIGKILLed: its metad starts it again; a write through it meanwhile waits for it
                # or, answered 503, goes to another member. Its mirror must follow the new etcd
                # (docs/internals.md, "A metad's mirror after its etcd is SIGKILLed").
                killed = _etcd_pid(cloud, record.instance_id)
                assert killed, f"no etcd recorded on member 0 ({record.instance_id})"
                os.kill(killed, signal.SIGKILL)
                faults += 1
            elif n == 4:
                # A member's VM crashes (its processes killed, the cloud still says running): its
                # metad is silent past metadata_silence, so it is replaced too. One made by an
                # earlier replacement: the agents still know only the first three members
                # (telling them of new ones is docs/internals.md's "Agents told of a new
                # member"), and the last of those must stay for them.
                lost_vm = record.members[0].instance_id
                cloud.crash_vm(lost_vm)
                faults += 1
            await rollout
            await expect(service, cluster.id, "active")
            tally.operations += 1
            if n == 3:
                await _etcd_restarted(cloud, record, record.instance_id, killed)
            if lost_vm:
                record = await _replaced(service.metadata, lost_vm)
                await _whole(cloud, record, lost_vm)
        nodes = await service.nodes(cluster.id)
        lost = 0
        for node in nodes:
            rendered = cloud.vm_file(node.instance_id, GREETING["dest"])
            lost += rendered != f"hi-{rollouts}\n"
        print("\n" + tally.line("metadata-loss", faults, lost))
        assert lost == 0, "a node did not end with the last value"
