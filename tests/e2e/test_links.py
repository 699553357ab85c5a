"""Links between two clusters of one owner: B sees A's hosts under /self/links/<name> and follows them.

The demo image renders ``/etc/demo/links.conf`` from ``/links`` (conf.d/links.toml), so what B's
agent sees of A is a file on B's VM; a scale-out of A must reach that file without any job on B.
"""

from __future__ import annotations

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.service import InvalidRequest

pytestmark = pytest.mark.e2e
RENDER_TIMEOUT = 60.0


def linked_hosts(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


async def test_a_linked_cluster_sees_the_other_and_follows_its_scale_out(cloud: Cloud) -> None:
    service = cloud.service
    a, _ = await service.create_cluster(owner="o", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 0})
    await expect(service, a.id, "active")
    b, _ = await service.create_cluster(
        owner="o", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 0}, links={"peer": a.id}
    )
    await expect(service, b.id, "active")
    b_node = next(n for n in await service.nodes(b.id))

    def expected() -> set[str]:
        return {f"peer {n.role} {n.ip}" for n in a_nodes}

    a_nodes = await service.nodes(a.id)
    assert linked_hosts(cloud.vm_file(b_node.instance_id, "/etc/demo/links.conf")) == expected()
    # A's own nodes link to nothing: their file lists no host.
    assert linked_hosts(cloud.vm_file(a_nodes[0].instance_id, "/etc/demo/links.conf")) == set()

    await service.scale(a.id, "web", 2)
    await expect(service, a.id, "active")
    a_nodes = await service.nodes(a.id)
    assert len(a_nodes) == 2
    record = await service.metadata.get("o", "sim")
    assert record is not None
    client = service.metadata.client(record)
    agents = AgentStatus(client, b.id)
    await agents.start()

    def rendered() -> bool:
        return linked_hosts(cloud.vm_file(b_node.instance_id, "/etc/demo/links.conf")) == expected()

    try:  # B's agent reports every round it applies (after writing the file): wait for the one with A's
        await agents.wait_for(lambda _: rendered(), RENDER_TIMEOUT)  # scale-out, no job on B needed
    finally:
        await agents.close()

    # Links after create: B's link is removed, then added under another name; B's template
    # (reading /self/links/<name>/...) re-renders each time, and a refused change changes nothing.
    b_file = lambda: linked_hosts(cloud.vm_file(b_node.instance_id, "/etc/demo/links.conf"))  # noqa: E731
    with pytest.raises(InvalidRequest, match=r"links\.peer: a cluster cannot link to itself"):
        await service.act(b.id, "links", {"links": {"peer": b.id}})
    with pytest.raises(InvalidRequest, match=r"links\.gone: cluster .* has no link 'gone'"):
        await service.act(b.id, "links", {"links": {"gone": None}})
    await service.act(b.id, "links", {"links": {"peer": None}})
    done = await expect(service, b.id, "active")
    assert done.links == {}
    assert b_file() == set()  # the job ends once every node applied the change
    await service.act(b.id, "links", {"links": {"again": a.id}})
    done = await expect(service, b.id, "active")
    assert done.links == {"again": a.id}
    assert b_file() == {f"again {n.role} {n.ip}" for n in a_nodes}
    job = await service.get_job(b.id, done.job_id or "")
    assert (job.action, job.status) == ("relink", "successful")

    for cid in (b.id, a.id):
        await service.delete_cluster(cid)
        await expect(service, cid, "deleted")


async def test_links_to_clusters_the_owner_does_not_have_are_refused(cloud: Cloud) -> None:
    service = cloud.service
    other, _ = await service.create_cluster(
        owner="x", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 0}
    )
    before = len(await service.list_clusters())
    for links, message in [
        ({"peer": other.id}, f"links.peer: owner o has no cluster '{other.id}'"),
        ({"peer": "cl-nothing"}, "links.peer: owner o has no cluster 'cl-nothing'"),
        ({"Bad/Name": other.id}, "links.Bad/Name: a link name is"),
    ]:
        with pytest.raises(InvalidRequest) as refused:
            await service.create_cluster(owner="o", runtime="sim", app=demo_app(), links=links)
        assert str(refused.value).startswith(message), str(refused.value)
    assert len(await service.list_clusters()) == before  # nothing was made
    await expect(service, other.id, "active")
    await service.delete_cluster(other.id)
    await expect(service, other.id, "deleted")
