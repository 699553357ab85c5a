"""Noticing dead nodes of active clusters, and deciding whether replacing them is safe.

An agent's heartbeat is a key on a metad lease: when the agent (or its VM) dies, the lease runs
out and the key is deleted, which the watch stream reports. A node silent for longer than the
grace period is replaced by a ``recover`` job, unless too many nodes are silent at once: that
looks like a network partition or a metadata outage rather than dead VMs, and replacing half a
cluster on such evidence would do more harm than waiting, so auto-recovery halts and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from pitrix.logs import get_logger
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.records import Node

WATCH_FOREVER = 365 * 24 * 3600.0


@dataclass(frozen=True)
class RecoveryPolicy:
    enabled: bool = True
    grace: float = 30.0  # seconds a node may stay silent before it is replaced
    max_down_fraction: float = 0.5  # more nodes than this share down at once: halt (never below 1)

    def __post_init__(self) -> None:
        if self.grace <= 0:
            raise ValueError(f"recovery.grace: must be positive, not {self.grace}")
        if not 0 < self.max_down_fraction <= 1:
            raise ValueError(f"recovery.max_down_fraction: must be in (0, 1], not {self.max_down_fraction}")

    def meltdown(self, down: int, total: int) -> bool:
        """Whether ``down`` silent nodes of ``total`` are too many to replace automatically."""
        return down > max(1, int(total * self.max_down_fraction))


def silent(agents: AgentStatus, nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.instance_id and not agents.has_heartbeat(n.instance_id)]


async def watch_for_dead_nodes(
    agents: AgentStatus,
    nodes: Callable[[], Awaitable[list[Node]]],
    policy: RecoveryPolicy,
    cluster_id: str,
) -> list[Node]:
    """Until some nodes have been silent for the whole grace period: those nodes.

    A node that reports again within the grace period is forgiven; the wait starts over.
    """
    log = get_logger("pitrix.recovery", cluster_id=cluster_id)
    # The view starts empty and fills as metad replays the agents' reports: a node is not
    # suspected before the replay had the grace period to show its heartbeat (nor warned about).
    members = await nodes()
    with contextlib.suppress(TimeoutError):
        await agents.wait_for(partial(_all_back, agents, silent(agents, members)), policy.grace)
    while True:
        members = await nodes()
        await agents.wait_for(partial(_any_silent, agents, members), WATCH_FOREVER)
        suspects = silent(agents, members)
        log.warning("nodes silent", nodes=[n.node_id for n in suspects], grace=policy.grace)
        try:
            await agents.wait_for(partial(_all_back, agents, suspects), policy.grace)
        except TimeoutError:
            dead = silent(agents, await nodes())
            if dead:
                return dead
        else:
            log.info("silent nodes reported again", nodes=[n.node_id for n in suspects])


def _any_silent(agents: AgentStatus, members: list[Node], _: object) -> bool:
    return bool(silent(agents, members))


def _all_back(agents: AgentStatus, suspects: list[Node], _: object) -> bool:
    return all(agents.has_heartbeat(n.instance_id) for n in suspects)
