"""The cluster lifecycle as one explicit `transitions` state machine.

One Machine serves every cluster (each cluster is a model added to it). The machine only decides
whether an action is allowed in the current state and what state it leads to; the work of a
transitional state is a plan run by the cluster's supervisor, never a machine callback, because a
new trigger arriving during a callback would cut that work short.
"""

from __future__ import annotations

from typing import Any, get_args

from transitions import Machine, MachineError

from pitrix.runtime.records import State

# Every state a cluster record can hold (records.State) is a state of the machine.
STATES: list[str] = list(get_args(State))

# States whose entry starts a plan; the plan's end fires `finish` (or `fail`).
TRANSITIONAL = [
    "creating",
    "stopping",
    "starting",
    "scaling_out",
    "scaling_in",
    "updating",
    "recovering",
    "deleting",
]

# Which action starts which transitional state (used by retry to pick its destination).
ACTION_STATE = {
    "create": "creating",
    "stop": "stopping",
    "start": "starting",
    "scale_out": "scaling_out",
    "scale_in": "scaling_in",
    "update_env": "updating",
    "recover": "recovering",
    "delete": "deleting",
}

_FINISH = {
    "creating": "active",
    "stopping": "stopped",
    "starting": "active",
    "scaling_out": "active",
    "scaling_in": "active",
    "updating": "active",
    "recovering": "active",
    "deleting": "deleted",
}

# The actions an operator may ask for (finish and fail are the supervisor's).
USER_ACTIONS = [
    "create",
    "start",
    "stop",
    "scale_out",
    "scale_in",
    "update_env",
    "recover",
    "retry",
    "delete",
]


def _transitions() -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = [
        {"trigger": "create", "source": "pending", "dest": "creating"},
        {"trigger": "stop", "source": "active", "dest": "stopping"},
        {"trigger": "start", "source": "stopped", "dest": "starting"},
        {"trigger": "scale_out", "source": "active", "dest": "scaling_out"},
        {"trigger": "scale_in", "source": "active", "dest": "scaling_in"},
        {"trigger": "update_env", "source": "active", "dest": "updating"},
        {"trigger": "recover", "source": "active", "dest": "recovering"},
        {"trigger": "delete", "source": ["pending", "active", "failed", "stopped"], "dest": "deleting"},
        {"trigger": "fail", "source": TRANSITIONAL, "dest": "failed"},
        # an env rollout that failed but put every node back as it was leaves the cluster usable
        {"trigger": "roll_back", "source": "updating", "dest": "active"},
    ]
    table += [{"trigger": "finish", "source": src, "dest": dst} for src, dst in _FINISH.items()]
    # retry re-enters the state of the job that failed; the journal skips what was already done.
    table += [
        {
            "trigger": "retry",
            "source": "failed",
            "dest": state,
            "conditions": [lambda target, state=state: target == state],
        }
        for state in ACTION_STATE.values()
    ]
    return table


class ClusterModel:
    """The machine's view of one cluster: just its id and state."""

    state: str

    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id


class LifecycleError(Exception):
    """An action is not allowed in the cluster's current state."""


class ChangedMeanwhile(LifecycleError):
    """A record the action read was written before the action's own write landed."""


class Lifecycle:
    """The one machine, shared by every cluster model."""

    def __init__(self) -> None:
        self.machine = Machine(
            model=None,
            states=STATES,
            transitions=_transitions(),
            initial=None,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )

    def add(self, cluster_id: str, state: str) -> ClusterModel:
        model = ClusterModel(cluster_id)
        self.machine.add_model(model, initial=state)
        return model

    def remove(self, model: ClusterModel) -> None:
        self.machine.remove_model(model)

    def apply(self, model: ClusterModel, action: str, *args: Any) -> tuple[str, str]:
        """Fire ``action`` on ``model``; returns (old state, new state) or raises LifecycleError."""
        old = model.state
        if action not in self.machine.events:
            raise LifecycleError(f"unknown action {action!r}")
        try:
            ok = model.trigger(action, *args)  # type: ignore[attr-defined]
        except MachineError:
            ok = False
        if not ok:
            allowed = self.allowed_actions(model)
            raise LifecycleError(
                f"cannot {action} a cluster that is {old}"
                + (f" (allowed now: {', '.join(allowed)})" if allowed else "")
            )
        return old, model.state

    def revert(self, model: ClusterModel, state: str) -> None:
        """Put ``model`` back in ``state`` after its change could not be persisted."""
        self.machine.set_state(state, model)

    def allowed_actions(self, model: ClusterModel) -> list[str]:
        return [a for a in USER_ACTIONS if self.machine.get_transitions(trigger=a, source=model.state)]

    @staticmethod
    def finish_state(state: str) -> str:
        return _FINISH[state]
