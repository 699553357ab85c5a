"""The cluster lifecycle: which action each state allows and where it leads, as pure functions.

The table is derived from the actions (``pitrix.runtime.actions``): each declares the states it
starts from, the transitional state it runs in and the state it leaves on success. Nothing here
holds a cluster's state: the cluster record in etcd is the one source of truth, and every
decision is ``next_state(record.state, action)`` over the state just read.

The ``transitions`` machine is built from the same table once, to check the table (every state
known, no action ambiguous) and to draw it on the web page; it never holds a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from transitions import Machine

from pitrix.runtime.records import State

# Every state a cluster record can hold.
STATES: list[str] = list(get_args(State))
RETRY = "retry"


class LifecycleError(Exception):
    """An action is not allowed in the cluster's current state."""


class ChangedMeanwhile(LifecycleError):
    """A record the action read was written before the action's own write landed."""


@dataclass(frozen=True)
class Edge:
    """One action of the lifecycle: where it may start, where it runs, where it ends."""

    action: str
    sources: tuple[str, ...]
    running: str  # the transitional state its plan runs in
    done: str  # the state success leaves
    rolled_back: str | None = None  # the state a clean rollback leaves (None: a failure is a failure)


class Lifecycle:
    """The transition table of a set of actions (``pitrix.runtime.actions.LIFECYCLE`` is the one)."""

    def __init__(self, edges: Sequence[Edge]) -> None:
        self.edges = {edge.action: edge for edge in edges}
        self.by_state = {edge.running: edge for edge in edges}
        if len(self.by_state) != len(edges):
            raise ValueError("two actions run in the same transitional state")
        unknown = {s for e in edges for s in (*e.sources, e.running, e.done)} - set(STATES)
        if unknown:
            raise ValueError(f"states not in records.State: {sorted(unknown)}")
        self.transitional = [edge.running for edge in edges]
        self.machine = Machine(
            model=None,
            states=STATES,
            transitions=self._table(),
            initial=None,
            auto_transitions=False,
        )

    def _table(self) -> list[dict[str, Any]]:
        table: list[dict[str, Any]] = []
        for edge in self.edges.values():
            table.append({"trigger": edge.action, "source": list(edge.sources), "dest": edge.running})
            table.append({"trigger": "finish", "source": edge.running, "dest": edge.done})
            table.append({"trigger": RETRY, "source": "failed", "dest": edge.running})
            if edge.rolled_back:
                table.append({"trigger": "roll_back", "source": edge.running, "dest": edge.rolled_back})
        table.append({"trigger": "fail", "source": self.transitional, "dest": "failed"})
        return table

    def next_state(self, state: str, action: str) -> str:
        """The state ``action`` moves a cluster in ``state`` to, or LifecycleError saying why not."""
        edge = self.edges.get(action)
        if edge is None:
            raise LifecycleError(f"unknown action {action!r}")
        if state not in edge.sources:
            allowed = self.allowed_actions(state)
            # Said with the words a person types (scale out, update env), not the action's name.
            raise LifecycleError(
                f"cannot {action.replace('_', ' ')} a cluster that is {state}"
                + (f" (allowed now: {', '.join(a.replace('_', ' ') for a in allowed)})" if allowed else "")
            )
        return edge.running

    def retry_state(self, state: str, action: str) -> str:
        """A failed cluster re-enters the state of its failed job's action."""
        if state != "failed":
            raise LifecycleError(f"cannot retry a cluster that is {state} (only a failed one)")
        edge = self.edges.get(action)
        if edge is None:
            raise LifecycleError(f"cannot retry: unknown action {action!r}")
        return edge.running

    def end_state(self, running: str, *, ok: bool, rolled_back: bool = False) -> str:
        """Where a job running in ``running`` leaves its cluster."""
        edge = self.by_state[running]
        if ok:
            return edge.done
        if rolled_back and edge.rolled_back:
            return edge.rolled_back
        return "failed"

    def allowed_actions(self, state: str) -> list[str]:
        allowed = [edge.action for edge in self.edges.values() if state in edge.sources]
        return [*allowed, RETRY] if state == "failed" else allowed

    def is_transitional(self, state: str) -> bool:
        return state in self.by_state
