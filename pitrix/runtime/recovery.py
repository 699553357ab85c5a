"""Noticing dead nodes of active clusters, and deciding whether replacing them is safe.

An agent's heartbeat is a key on a metad lease: when the agent (or its VM) dies, the lease runs
out and the key is deleted, which the watch stream reports. A node silent for longer than the
grace period is replaced by a ``recover`` job, unless too many nodes are silent at once: that
looks like a network partition or a metadata outage rather than dead VMs, and replacing half a
cluster on such evidence would do more harm than waiting, so auto-recovery halts and says so.

An app chooses what counts as down (``AppSpec.recovery.on``): a silent agent (``heartbeat``, the
default), and/or a node whose agent reports it unhealthy past its role's ``unhealthy_threshold``
(``health``); either way it must stay down for the grace period, which leaves the node's
``action_cmd`` its chance to repair it first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from pitrix.logs import get_logger
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.records import Node
from pitrix.runtime.spec import AppSpec

WATCH_FOREVER = 365 * 24 * 3600.0


@dataclass(frozen=True)
class RecoveryPolicy:
    enabled: bool = True
    grace: float = 30.0  # seconds a node may stay silent before it is replaced
    max_down_fraction: float = 0.5  # more nodes than this share down at once: halt (never below 1)
    # Metadata clusters of several: a lost member is replaced (pitrix.runtime.metadata_monitor).
    metadata: bool = True
    metadata_interval: float = 5.0  # seconds between looks at a metadata cluster's members
    metadata_silence: float = 30.0  # seconds a running member's metad may not answer before it is lost

    def __post_init__(self) -> None:
        if self.grace <= 0:
            raise ValueError(f"recovery.grace: must be positive, not {self.grace}")
        if not 0 < self.max_down_fraction <= 1:
            raise ValueError(f"recovery.max_down_fraction: must be in (0, 1], not {self.max_down_fraction}")
        for name in ("metadata_interval", "metadata_silence"):
            if getattr(self, name) <= 0:
                raise ValueError(f"recovery.{name}: must be positive, not {getattr(self, name)}")

    def meltdown(self, down: int, total: int) -> bool:
        """Whether ``down`` silent nodes of ``total`` are too many to replace automatically."""
        return down > max(1, int(total * self.max_down_fraction))


def silent(agents: AgentStatus, nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.instance_id and not agents.has_heartbeat(n.instance_id)]


@dataclass(frozen=True)
class DownWhen:
    """What makes a node down for an app: its ``recovery.on`` triggers, with its roles' thresholds."""

    heartbeat: bool = True
    # role -> unhealthy_threshold, for the roles with a health check when ``health`` is a trigger
    health: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, app: AppSpec | None) -> DownWhen:
        if app is None:
            return cls()
        on = app.recovery.on
        thresholds = {
            r.name: r.health_check.unhealthy_threshold for r in app.roles if r.health_check is not None
        }
        return cls(heartbeat="heartbeat" in on, health=thresholds if "health" in on else {})

    def down(self, agents: AgentStatus, nodes: list[Node]) -> list[Node]:
        found = []
        for node in nodes:
            if not node.instance_id:
                continue
            silent = self.heartbeat and not agents.has_heartbeat(node.instance_id)
            threshold = self.health.get(node.role)
            if silent or (threshold is not None and agents.unhealthy(node.instance_id, threshold)):
                found.append(node)
        return found


async def watch_for_dead_nodes(
    agents: AgentStatus,
    nodes: Callable[[], Awaitable[list[Node]]],
    policy: RecoveryPolicy,
    cluster_id: str,
    when: DownWhen | None = None,
) -> list[Node]:
    """Until some nodes have been down (``when``: silent by default) for the whole grace period:
    those nodes.

    A node that reports again (or passes its check again) within the grace period is forgiven;
    the wait starts over.
    """
    when = when or DownWhen()
    log = get_logger("pitrix.recovery", cluster_id=cluster_id)
    # The view starts empty and fills as metad replays the agents' reports: a node is not
    # suspected before the replay had the grace period to show its heartbeat (nor warned about).
    members = await nodes()
    with contextlib.suppress(TimeoutError):
        await agents.wait_for(partial(_all_back, agents, when, when.down(agents, members)), policy.grace)
    while True:
        members = await nodes()
        await agents.wait_for(partial(_any_down, agents, when, members), WATCH_FOREVER)
        suspects = when.down(agents, members)
        log.warning("nodes down", nodes=[n.node_id for n in suspects], grace=policy.grace)
        try:
            await agents.wait_for(partial(_all_back, agents, when, suspects), policy.grace)
        except TimeoutError:
            dead = when.down(agents, await nodes())
            if dead:
                return dead
        else:
            log.info("down nodes are back", nodes=[n.node_id for n in suspects])


def _any_down(agents: AgentStatus, when: DownWhen, members: list[Node], _: object) -> bool:
    return bool(when.down(agents, members))


def _all_back(agents: AgentStatus, when: DownWhen, suspects: list[Node], _: object) -> bool:
    return not when.down(agents, suspects)
