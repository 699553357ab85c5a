"""The recovery monitor: one watch per active cluster's agents, replacing nodes found dead.

The policy (grace period, meltdown guard) and the watch itself are in ``recovery.py``; this keeps
one monitor task per active cluster alive across metad restarts and dropped streams, and turns
its verdict into a ``recover`` job or a halt recorded on the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_monitor import MetadataMonitor
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.recovery import DownWhen, RecoveryPolicy, watch_for_dead_nodes
from pitrix.runtime.repository import NotFound, Repository
from pitrix.runtime.supervisor import KeyedTasks

# The pause after a failed watch, doubling up to the cap while it keeps failing.
FIRST_PAUSE = 0.5
MAX_PAUSE = 30.0

Recover = Callable[[str, list[str]], Awaitable[object]]
Halt = Callable[[str, str], Awaitable[object]]


class RecoveryMonitor:
    def __init__(
        self,
        repo: Repository,
        metadata: MetadataClusters,
        policy: RecoveryPolicy,
        recover: Recover,
        halt: Halt,
    ) -> None:
        self.repo = repo
        self.metadata = metadata
        self.policy = policy
        self.recover = recover
        self.halt = halt
        self.tasks = KeyedTasks("recovery")
        self.members = MetadataMonitor(metadata, policy)  # the metadata clusters' members

    def watch(self, cluster: Cluster) -> None:
        """Watch an active cluster's agents for dead nodes (unless recovery is off, for the daemon
        or the app, or halted), and the members of the metadata cluster serving it."""
        self.members.follow(cluster)
        if self.policy.enabled and cluster.app.recovery.enabled and not cluster.recovery_halted:
            self.tasks.start(cluster.id, partial(self._watch, cluster))

    def forget(self, cid: str) -> None:
        """A job (or another replica) drives the cluster now; its own plan watches the agents."""
        self.tasks.cancel(cid)

    async def stop(self) -> None:
        await asyncio.gather(self.tasks.stop(), self.members.stop())

    async def _watch(self, cluster: Cluster) -> None:
        """Watch until nodes are down (as the app's ``recovery.on`` says), then replace them (or
        halt, if too many are).

        A watch that fails (metad restarting, a dropped connection, etcd unreachable for a moment)
        is resumed with a growing, jittered pause for as long as the cluster stays active and
        monitored: a monitor that quietly ended would leave the cluster unrecovered for good.
        """
        cid = cluster.id
        log = get_logger("pitrix.recovery", cluster_id=cid)
        backoff = Backoff(FIRST_PAUSE, MAX_PAUSE)
        while True:
            try:
                dead = await self._until_dead(cluster)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = backoff.next()
                log.warning(
                    "recovery monitor interrupted; resuming",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(wait, 3),
                )
                await asyncio.sleep(wait)
                try:
                    cluster = await self.repo.cluster(cid)
                except NotFound:
                    return
                except Exception as again:  # etcd still away: try again after the next pause
                    log.info("cluster unreadable; monitor waits", error=str(again))
                    continue
                if (
                    cluster.state != "active"
                    or cluster.recovery_halted
                    or not self.policy.enabled
                    or not cluster.app.recovery.enabled
                ):
                    log.info("recovery monitor ends", state=cluster.state)
                    return
        if dead is None:
            return
        await self._act(cid, dead)

    async def _act(self, cid: str, dead: list[Node]) -> None:
        bound = get_logger("pitrix.recovery", cluster_id=cid)
        total = len([n for n in await self.repo.nodes(cid) if n.instance_id])
        names = ", ".join(n.node_id for n in dead)
        if self.policy.meltdown(len(dead), total):
            reason = (
                f"auto-recovery halted: {len(dead)} of {total} nodes silent at once ({names}); "
                "this looks like a partition or a metadata outage, so nothing is replaced; "
                "run recover once the cause is known"
            )
            bound.error("meltdown guard", dead=[n.node_id for n in dead], total=total)
            await self.halt(cid, reason)
            return
        bound.warning("replacing dead nodes", nodes=[n.node_id for n in dead])
        await self.recover(cid, [n.node_id for n in dead])

    async def _until_dead(self, cluster: Cluster) -> list[Node] | None:
        """The nodes found dead by one watch of the cluster's agents (None: no metadata cluster)."""
        record = await self.metadata.get(cluster.owner, cluster.runtime)
        if record is None:
            return None
        agents = AgentStatus(self.metadata.client(record), cluster.id)
        await agents.start()
        try:
            return await watch_for_dead_nodes(
                agents,
                partial(self.repo.nodes, cluster.id),
                self.policy,
                cluster.id,
                DownWhen.of(cluster.app),
            )
        finally:
            await agents.close()
