"""A metadata cluster of three under load: one etcd member and its pitrix-metad SIGKILLed while a
writer streams updates and agents watch through all three endpoints, then brought back; repeated.

Every update is one atomic merge of a key of its own (``k<n>``) and ``version=n``, so a lost
acknowledged write shows as a missing key, not only as a stale version. A write whose answer was
lost (its member died under it) is not acknowledged and is sent again, through the next member,
with the same content: a merge is idempotent. At the end every agent holds the last version and
every acknowledged key, every member (the restarted ones too) serves them all, and no agent ever
saw the version go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bench import procs

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # the cluster helpers live beside the metad HA test
    sys.path.insert(0, str(TESTS))

from metad.etcd_cluster import Agent, EtcdCluster, Member, require_etcd, three_members, watching  # noqa: E402

from pitrix.metad.client import MetadClientError, MetadManagementClient  # noqa: E402

pytestmark = pytest.mark.timeout(900)

AGENTS = 6
DEADLINE = 90.0
PER_PHASE = 15  # acknowledged writes before a kill, during the outage, and after the restart


@dataclass
class Writer:
    """A stream of updates through whichever member answers; counts what it had to send again."""

    cluster: EtcdCluster
    acked: list[int] = field(default_factory=list)
    resent: int = 0
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, stop: asyncio.Event) -> None:
        clients = [self.cluster.manage(m) for m in self.cluster.members]
        turn = itertools.cycle(range(len(clients)))
        current = next(turn)
        try:
            for n in itertools.count(1):
                if stop.is_set():
                    return
                while True:
                    try:
                        await clients[current].put_data(
                            "/clusters/c1/env/web", {f"k{n:05d}": str(n), "version": str(n)}
                        )
                        break
                    except (aiohttp.ClientError, MetadClientError, TimeoutError):
                        # Its member is dead or without a leader: not acknowledged; the same merge
                        # goes again through the next member.
                        self.resent += 1
                        current = next(turn)
                        await asyncio.sleep(0.05)  # backoff before asking again, not a wait
                async with self.progress:
                    self.acked.append(n)
                    self.progress.notify_all()
                # Pacing, so the agents re-read a view that changes at a bounded rate.
                await asyncio.sleep(0.02)
        finally:
            for client in clients:
                await client.close()

    async def more(self, count: int) -> None:
        """Until ``count`` more writes are acknowledged from now."""
        async with self.progress:
            target = len(self.acked) + count
            await asyncio.wait_for(self.progress.wait_for(lambda: len(self.acked) >= target), DEADLINE)


@contextlib.asynccontextmanager
async def writing(writer: Writer) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield stop
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_member_killed_and_brought_back_under_load_loses_no_write(
    tmp_path: Path, long_form: bool
) -> None:
    if (why := require_etcd()) is not None:
        pytest.fail(why)
    rounds = 4 if long_form else 1
    octet = procs.private_net()
    iids = [f"i-{n}" for n in range(AGENTS)]
    ips = [procs.host_ip(octet, k) for k in range(3)]
    async with three_members(ips, tmp_path, iids) as cluster:
        members = cluster.members
        async with cluster.manage(members[0]) as manage:
            await manage.post_data(
                "/clusters/c1",
                {"cluster": {"cluster_id": "c1", "owner": "usr-a"}, "env": {"web": {"version": "0"}}},
            )
            for n, iid in enumerate(iids):
                await manage.put_mapping(
                    iid, {"cluster_id": "c1", "role": "web", "ip": procs.host_ip(octet, 10 + n)}
                )
        urls = [m.instance_url for m in members]
        # Each agent lists the endpoints from a different start, so some sit on every metad.
        agents = [Agent(iid, urls[n % 3 :] + urls[: n % 3], cluster.pki_dir) for n, iid in enumerate(iids)]
        writer = Writer(cluster)
        kills = 0
        async with watching(agents):
            await asyncio.wait_for(asyncio.gather(*(a.sees("0") for a in agents)), DEADLINE)
            async with writing(writer):
                for r in range(rounds):
                    await writer.more(PER_PHASE)
                    # The leader in even rounds (an election under load), a follower in odd ones.
                    leader = await cluster.leader()
                    victim: Member = (
                        leader if r % 2 == 0 else random.choice([m for m in members if m is not leader])
                    )
                    victim.kill()
                    await victim.wait_dead()
                    kills += 1
                    await writer.more(PER_PHASE)  # the cluster goes on with two members
                    await cluster.restart(victim, tmp_path / f"metad-{victim.name}.log")
                    await writer.more(PER_PHASE)
            last = str(writer.acked[-1])
            await asyncio.wait_for(asyncio.gather(*(a.sees(last) for a in agents)), DEADLINE)

        expected = {f"/self/env/k{n:05d}": str(n) for n in writer.acked}
        missing_in_agents = {
            iid: sorted(set(expected) - set(a.values)) for iid, a in zip(iids, agents, strict=True)
        }
        backwards = {
            iid: a.seen
            for iid, a in zip(iids, agents, strict=True)
            if any(int(y) < int(x) for x, y in itertools.pairwise(v for v in a.seen if v))
        }
        missing_in_members = {}
        for m in members:
            async with cluster.manage(m) as manage:
                served = await _read_with_retry(manage)
            missing_in_members[m.name] = sorted(n for n in writer.acked if served.get(f"k{n:05d}") != str(n))
    lost = (
        sum(len(keys) for keys in missing_in_agents.values())
        + sum(len(ns) for ns in missing_in_members.values())
        + len(backwards)
    )
    failovers = sum(a.failures for a in agents)
    print(
        f"\nCHAOS metad-cluster: operations={len(writer.acked)} faults_injected={kills} "
        f"recovered={kills + writer.resent + failovers} (member restarts {kills}, writes re-sent "
        f"{writer.resent}, agent re-asks {failovers}) lost={lost}"
    )
    assert not any(missing_in_agents.values()), f"acknowledged writes missing in agents: {missing_in_agents}"
    assert not any(missing_in_members.values()), (
        f"acknowledged writes missing in members: {missing_in_members}"
    )
    assert not backwards, f"agents saw the version go backwards: {backwards}"


async def _read_with_retry(manage: MetadManagementClient) -> dict[str, str]:
    """The env as a member's metad serves it; a just-restarted member may still be catching up."""
    last: Exception | None = None
    for _ in range(100):
        try:
            served = await manage.get_data("/clusters/c1/env/web")
            return dict(served) if isinstance(served, dict) else {}
        except (aiohttp.ClientError, MetadClientError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"a member's metad does not answer: {last}")
