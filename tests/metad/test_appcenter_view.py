"""What AppCenter-profile apps read from metad: role-less hosts (``hosts/<iid>`` with ``/self/host``
still served), the operation keys while present, and a linked cluster's flat env."""

from __future__ import annotations

import asyncio

import pytest

from pitrix.metad.client import MetadClientError, MetadManagementClient
from pitrix.metad.server import Metad

DEADLINE = 10.0


async def _held(metad: Metad, instances, ip: str, path: str, since: int, count: int) -> asyncio.Task:
    """Start a long-poll and return once metad holds it (``count`` waiters in all)."""
    task = asyncio.create_task(instances.get(ip, path, wait="true", prev_version=since))
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(count), DEADLINE)
    assert not task.done()
    return task


async def _roleless(manage: MetadManagementClient, net) -> None:
    """z1: a role-less app (its one role ``zk_node``), two hosts straight under ``hosts``."""
    hosts = {
        f"i-z{n}": {"instance_id": f"i-z{n}", "ip": net.ip(n), "sid": str(n), "role": "", "gid": ""}
        for n in (1, 2)
    }
    doc = {
        "cluster": {"cluster_id": "z1", "owner": "usr-a"},
        "hosts": hosts,
        "env": {"zk_node": {"tickTime": "2000"}},
    }
    await manage.post_data("/clusters/z1", doc)
    for n in (1, 2):
        mapping = {"cluster_id": "z1", "role": "zk_node", "ip": net.ip(n), "layout": "roleless"}
        await manage.put_mapping(f"i-z{n}", mapping)


async def test_a_roleless_apps_hosts_have_no_role_level_and_self_host_is_served(
    manage: MetadManagementClient, instances, net, metad: Metad
) -> None:
    await _roleless(manage, net)
    status, view, headers = await instances.get(net.ip(1), "/self")
    assert status == 200
    assert view["host"]["instance_id"] == "i-z1" and view["host"]["role"] == ""
    assert sorted(view["hosts"]) == ["i-z1", "i-z2"]  # what ``lsdir "/hosts"`` lists: instance ids
    assert view["env"] == {"tickTime": "2000"}  # role-scoped sections still follow the mapping's role
    status, text, _ = await instances.get(net.ip(2), "/self/host", accept="text/plain")
    assert status == 200 and f"/ip\t{net.ip(2)}" in text.splitlines()
    status, ip, _ = await instances.get(net.ip(2), "/self/hosts/i-z1/ip", accept="text/plain")
    assert (status, ip) == (200, net.ip(1))

    # A change to the instance's own flat entry wakes its /self/host long-poll, not its peer's.
    since = int(headers["X-Metad-Version"])
    own = await _held(metad, instances, net.ip(1), "/self/host", since, 1)
    peer = await _held(metad, instances, net.ip(2), "/self/host", since, 2)
    await manage.put_data("/clusters/z1/hosts/i-z1", {"gsid": "123456789"})
    status, host, _ = await asyncio.wait_for(own, DEADLINE)
    assert status == 200 and host["gsid"] == "123456789"
    assert not peer.done()
    peer.cancel()


async def test_a_mapping_with_an_unknown_layout_is_refused_naming_the_field(
    manage: MetadManagementClient, net
) -> None:
    with pytest.raises(MetadClientError) as refused:
        await manage.put_mapping("i-q1", {"cluster_id": "z1", "role": "r", "ip": net.ip(9), "layout": "flat"})
    assert "layout" in str(refused.value) and "400" in str(refused.value)


async def test_operation_keys_are_served_while_present_to_every_instance(
    seed, manage: MetadManagementClient, instances, net, metad: Metad
) -> None:
    await seed()
    for path in ("/self/upgrade-audit", "/self/rebuild-audit", "/self/vertical-scaling-roles"):
        status, _, _ = await instances.get(net.ip(1), path)
        assert status == 404
    _, _, headers = await instances.get(net.ip(1), "/self")
    since = int(headers["X-Metad-Version"])
    waiting = await _held(metad, instances, net.ip(2), "/self/vertical-scaling-roles", since, 1)
    await manage.post_data("/clusters/c1/vertical-scaling-roles", "web,db")
    status, roles, _ = await asyncio.wait_for(waiting, DEADLINE)
    assert (status, roles) == (200, "web,db")
    await manage.post_data("/clusters/c1/upgrade-audit", {"from_app_version": "1.0", "to_app_version": "1.1"})
    await manage.post_data("/clusters/c1/rebuild-audit", "web-2")
    # The whole /self (the shared-sections fast path) of two instances of one role, and another role's.
    for ip in (net.ip(1), net.ip(2), net.ip(200)):
        status, view, _ = await instances.get(ip, "/self")
        assert view["vertical-scaling-roles"] == "web,db"
        assert view["upgrade-audit"] == {"from_app_version": "1.0", "to_app_version": "1.1"}
        assert view["rebuild-audit"] == "web-2"
    status, text, _ = await instances.get(net.ip(1), "/self/upgrade-audit", accept="text/plain")
    assert text.splitlines() == ["/from_app_version\t1.0", "/to_app_version\t1.1"]
    status, leaf, _ = await instances.get(
        net.ip(1), "/self/upgrade-audit/from_app_version", accept="text/plain"
    )
    assert (status, leaf) == (200, "1.0")
    # Removed at the operation's end: gone from every view, the cached shared sections too.
    for section in ("upgrade-audit", "rebuild-audit", "vertical-scaling-roles"):
        await manage.delete_data(f"/clusters/c1/{section}")
    for ip in (net.ip(1), net.ip(2)):
        _, view, _ = await instances.get(ip, "/self")
        assert not {"upgrade-audit", "rebuild-audit", "vertical-scaling-roles"} & set(view)
    # Another cluster's operation never shows.
    await manage.post_data("/clusters/c2/rebuild-audit", "s-1")
    status, _, _ = await instances.get(net.ip(1), "/self/rebuild-audit")
    assert status == 404


async def test_a_linked_clusters_flat_env_is_served_under_its_link(
    seed, manage: MetadManagementClient, instances, net, metad: Metad
) -> None:
    await seed()
    status, view, _ = await instances.get(net.ip(1), "/self/links/store")
    assert status == 200 and "env" not in view  # c2 publishes none (a native app)
    _, _, headers = await instances.get(net.ip(1), "/self")
    since = int(headers["X-Metad-Version"])
    waiting = await _held(metad, instances, net.ip(1), "/self/links/store/env", since, 1)
    await manage.post_data("/clusters/c2/linked-env", {"requirepass": "s3cret", "port": "6379"})
    status, env, _ = await asyncio.wait_for(waiting, DEADLINE)
    assert (status, env) == (200, {"requirepass": "s3cret", "port": "6379"})
    status, value, _ = await instances.get(
        net.ip(2), "/self/links/store/env/requirepass", accept="text/plain"
    )
    assert (status, value) == (200, "s3cret")
    _, whole, _ = await instances.get(net.ip(200), "/self")
    assert whole["links"]["store"]["env"] == {"requirepass": "s3cret", "port": "6379"}
    # c3 is another owner's: its env is no more visible than its hosts.
    await manage.post_data("/clusters/c3/linked-env", {"secret": "x"})
    status, _, _ = await instances.get(net.ip(1), "/self/links/foreign/env")
    assert status == 404
