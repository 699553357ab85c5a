"""Membership hooks, ordering and targeting on the simulator, with real agents and a real metad.

Every service of the ``kv`` app appends a line to ``/var/log/hooks.log`` on its node: the
nanosecond clock (the simulated VMs share the host's), the service, and what the node saw in its
``/self`` at that moment (a template renders adding-hosts, deleting-hosts, the ``replaces`` of an
added host and a published value before the agent runs the command of the same round). The tests
read those logs from the VMs' roots and check who ran what, in which order, seeing what.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_cloud import Cloud
from test_lifecycle import expect

from pitrix.runtime.service import InvalidRequest

pytestmark = pytest.mark.e2e

VIEW = (
    'add={{range getvs "/adding-hosts/*/*/node_id"}}{{.}},{{end}} '
    'del={{range getvs "/deleting-hosts/*/*/node_id"}}{{.}},{{end}} '
    'rep={{range getvs "/adding-hosts/*/*/replaces"}}{{.}},{{end}} '
    'pub={{getv "/published/welcome" "-"}}\n'
)


def log(service: str) -> str:
    return f'mkdir -p var/log && echo "$(date +%s%N) {service} $(cat etc/hooks/view)" >> var/log/hooks.log'


def kv_app(**role_changes: Any) -> dict[str, Any]:
    services: dict[str, Any] = {
        service: {"cmd": log(service), "timeout": 30}
        for service in ("init", "start", "scale_out", "scale_in", "stop", "destroy")
    }
    # One live member answers for the cluster (etcd: one `member add`) and publishes the answer.
    services["pre_scale_out"] = {
        "cmd": log("pre_scale_out") + """ && printf '{"welcome": "from-%s"}' "$(cat etc/hooks/me)\"""",
        "timeout": 30,
        "nodes_to_execute_on": 1,
        "publish": True,
    }
    role: dict[str, Any] = {
        "name": "kv",
        "count": 2,
        "image": "demo",
        "services": services,
        "templates": [
            {"name": "view", "dest": "/etc/hooks/view", "text": VIEW},
            {"name": "me", "dest": "/etc/hooks/me", "text": '{{getv "/host/node_id"}}\n', "keys": ["/host"]},
        ],
    }
    role.update(role_changes)
    return {"name": "kv", "roles": [role]}


def hooks(cloud: Cloud, instance_id: str) -> list[tuple[int, str, str]]:
    """(time in ns, service, what the node saw) for each line of a node's hook log."""
    lines = cloud.vm_file(instance_id, "/var/log/hooks.log").splitlines()
    parsed = []
    for line in lines:
        stamp, service, view = line.split(" ", 2)
        parsed.append((int(stamp), service, view))
    return parsed


def entry(log: list[tuple[int, str, str]], service: str) -> tuple[int, str]:
    """The last run of ``service`` in a log: (time, view)."""
    found = [(stamp, view) for stamp, name, view in log if name == service]
    assert found, f"{service} never ran: {log}"
    return found[-1]


async def node_ids(cloud: Cloud, cid: str) -> dict[str, str]:
    return {n.node_id: n.instance_id for n in await cloud.service.nodes(cid)}


async def test_pre_scale_out_publishes_for_the_new_node_then_chosen_and_ordered_nodes_leave(
    cloud: Cloud,
) -> None:
    service = cloud.service
    # The ordering names kv-1 first: it leaves first, though the highest index would be kv-3.
    app = kv_app(ordering="printf 'kv-1\\nkv-3\\nkv-2\\n'")
    app["roles"][0]["services"]["scale_in"]["pre_check"] = (
        'test "$PITRIX_SCALE_TO" -ge 1 || '
        '{ echo "refused: kv keeps one node, asked for $PITRIX_SCALE_TO"; exit 3; }'
    )
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app, counts={"kv": 2})
    cid = cluster.id
    await expect(service, cid, "active")
    first = await node_ids(cloud, cid)
    created = hooks(cloud, first["kv-1"])
    assert [name for _, name, _ in created] == ["init", "start"]
    assert entry(created, "start")[1] == "add= del= rep= pub=-"  # a create adds nobody

    # Scale out: kv-3 boots and is registered under adding-hosts; one live member runs
    # pre_scale_out seeing it there, and publishes; kv-3's init and start read the published value.
    await service.scale(cid, "kv", 3)
    await expect(service, cid, "active")
    grown = await node_ids(cloud, cid)
    assert set(grown) == {"kv-1", "kv-2", "kv-3"}
    one, two, three = (hooks(cloud, grown[n]) for n in ("kv-1", "kv-2", "kv-3"))
    pre_at, pre_view = entry(one, "pre_scale_out")
    assert pre_view == "add=kv-3, del= rep= pub=-"
    assert "pre_scale_out" not in [name for _, name, _ in two]  # nodes_to_execute_on: 1
    init_at, init_view = entry(three, "init")
    start_at, start_view = entry(three, "start")
    assert init_view == start_view == "add=kv-3, del= rep= pub=from-kv-1"
    out_at, out_view = entry(one, "scale_out")
    assert entry(two, "scale_out")[1] == out_view == "add=kv-3, del= rep= pub=from-kv-1"
    assert pre_at < init_at < start_at < out_at
    assert "scale_out" not in [name for _, name, _ in three]  # only the members that were there
    record = await service.metadata.get("o", "sim")
    assert record is not None
    client = service.metadata.client(record)
    assert await client.get_data(f"/clusters/{cid}/published") == {"welcome": "from-kv-1"}
    assert await client.get_data(f"/clusters/{cid}/adding-hosts") is None

    # Scale in a chosen node: kv-2 leaves, not the highest index; the others see it leaving.
    with pytest.raises(InvalidRequest, match="nodes: role kv has no node 'kv-9'"):
        await service.act(cid, "scale", {"role": "kv", "nodes": ["kv-9"]})
    with pytest.raises(InvalidRequest, match="not count 1"):
        await service.act(cid, "scale", {"role": "kv", "nodes": ["kv-2"], "count": 1})
    await service.act(cid, "scale", {"role": "kv", "nodes": ["kv-2"]})
    done = await expect(service, cid, "active")
    assert done.counts == {"kv": 2}
    left = await node_ids(cloud, cid)
    assert set(left) == {"kv-1", "kv-3"}
    for node_id in ("kv-1", "kv-3"):
        assert entry(hooks(cloud, left[node_id]), "scale_in")[1] == "add= del=kv-2, rep= pub=from-kv-1"
    statuses = {vm["instance_id"]: vm["status"] for vm in await cloud.ledger()}
    assert statuses[grown["kv-2"]] == "terminated"
    assert await client.get_data(f"/clusters/{cid}/deleting-hosts") is None

    # The ids have a gap now: a scale-out fills it (kv-2 again, a new instance), and every node
    # is still planned, started and converged by id.
    await service.scale(cid, "kv", 3)
    await expect(service, cid, "active")
    refilled = await node_ids(cloud, cid)
    assert set(refilled) == {"kv-1", "kv-2", "kv-3"} and refilled["kv-2"] != grown["kv-2"]
    assert entry(hooks(cloud, refilled["kv-2"]), "start")[1] == "add=kv-2, del= rep= pub=from-kv-1"

    # Without nodes the role's ordering chooses: kv-1 is listed first, so kv-1 leaves.
    await service.scale(cid, "kv", 2)
    await expect(service, cid, "active")
    assert set(await node_ids(cloud, cid)) == {"kv-2", "kv-3"}

    # pre_check refuses, with its output, before anything changes; the cluster stays active.
    before = await node_ids(cloud, cid)
    await service.scale(cid, "kv", 0)
    refused = await expect(service, cid, "active")
    assert refused.last_error is not None
    assert "refused: kv keeps one node, asked for 0" in refused.last_error
    job = await service.get_job(cid, refused.job_id or "")
    assert job.status == "failed" and "refused: kv keeps one node" in (job.error or "")
    assert refused.counts == {"kv": 2} and await node_ids(cloud, cid) == before
    assert all(n.status != "leaving" for n in await service.nodes(cid))
    assert await client.get_data(f"/clusters/{cid}/deleting-hosts") is None

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []


async def test_recover_shows_the_dead_leaving_and_its_replacement_joining(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=kv_app(), counts={"kv": 3})
    cid = cluster.id
    await expect(service, cid, "active")
    before = await node_ids(cloud, cid)
    dead = before["kv-2"]
    assert cloud.crash_vm(dead)

    await service.recover(cid, nodes=["kv-2"])
    await expect(service, cid, "active")
    after = await node_ids(cloud, cid)
    assert after["kv-2"] != dead and {after["kv-1"], after["kv-3"]} == {before["kv-1"], before["kv-3"]}

    one, three = hooks(cloud, after["kv-1"]), hooks(cloud, after["kv-3"])
    replacement = hooks(cloud, after["kv-2"])
    # The live members first let the dead one go (it is under deleting-hosts) ...
    in_at, in_view = entry(one, "scale_in")
    assert in_view == "add= del=kv-2, rep= pub=-"
    assert entry(three, "scale_in")[1] == in_view
    # ... then see its replacement under adding-hosts, saying which instance it replaces ...
    pre_at, pre_view = entry(one, "pre_scale_out")
    assert pre_view == f"add=kv-2, del=kv-2, rep={dead}, pub=-"
    # ... which starts knowing it replaces that instance, with what the member published ...
    assert [name for _, name, _ in replacement] == ["init", "start"]
    init_at, init_view = entry(replacement, "init")
    start_at, start_view = entry(replacement, "start")
    assert init_view == start_view == f"add=kv-2, del=kv-2, rep={dead}, pub=from-kv-1"
    # ... and the live members hear once it is up.
    out_at, out_view = entry(one, "scale_out")
    assert out_view == f"add=kv-2, del=kv-2, rep={dead}, pub=from-kv-1"
    assert entry(three, "scale_out")[1] == out_view
    assert in_at < pre_at < init_at < start_at < out_at

    record = await service.metadata.get("o", "sim")
    assert record is not None
    client = service.metadata.client(record)
    assert await client.get_data(f"/clusters/{cid}/adding-hosts") is None
    assert await client.get_data(f"/clusters/{cid}/deleting-hosts") is None
    hosts = await client.get_data(f"/clusters/{cid}/hosts/kv")
    assert set(hosts) == {after["kv-1"], after["kv-2"], after["kv-3"]}

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []


async def test_a_published_output_that_is_not_one_json_object_fails_the_step_saying_so(cloud: Cloud) -> None:
    service = cloud.service
    app = kv_app()
    # A log line before the object: the output as a whole is not JSON.
    app["roles"][0]["services"]["pre_scale_out"]["cmd"] = "echo adding a member; echo '{\"a\": 1}'"
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app, counts={"kv": 1})
    cid = cluster.id
    await expect(service, cid, "active")
    await service.scale(cid, "kv", 2)
    failed = await expect(service, cid, "failed")
    assert failed.last_error is not None
    assert "pre_scale_out on kv-1 (publish: true): its output is not JSON" in failed.last_error
    assert "adding a member" in failed.last_error
    record = await service.metadata.get("o", "sim")
    assert record is not None
    assert await service.metadata.client(record).get_data(f"/clusters/{cid}/published") is None
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []
