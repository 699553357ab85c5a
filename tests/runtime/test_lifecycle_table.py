"""The lifecycle table: which actions each state allows, and where they lead (derived from the actions)."""

from __future__ import annotations

import pytest

from pitrix.runtime.actions import ACTIONS, LIFECYCLE, TRANSITIONAL
from pitrix.runtime.lifecycle import Edge, Lifecycle, LifecycleError


@pytest.fixture
def lifecycle() -> Lifecycle:
    return LIFECYCLE


def step(lifecycle: Lifecycle, state: str, action: str) -> str:
    """Where ``action`` leads from ``state``: a user action, or a job's finish/fail/roll_back."""
    if action == "finish":
        if not lifecycle.is_transitional(state):
            raise LifecycleError(f"cannot finish a cluster that is {state}")
        return lifecycle.end_state(state, ok=True)
    if action == "fail":
        return lifecycle.end_state(state, ok=False)
    if action == "roll_back":
        if not lifecycle.is_transitional(state):
            raise LifecycleError(f"cannot roll back a cluster that is {state}")
        return lifecycle.end_state(state, ok=False, rolled_back=True)
    return lifecycle.next_state(state, action)


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        ("pending", "create", "creating"),
        ("active", "scale_out", "scaling_out"),
        ("active", "scale_in", "scaling_in"),
        ("active", "delete", "deleting"),
        ("failed", "delete", "deleting"),
        ("creating", "finish", "active"),
        ("scaling_out", "finish", "active"),
        ("scaling_in", "finish", "active"),
        ("deleting", "finish", "deleted"),
        ("creating", "fail", "failed"),
        ("active", "service", "running_service"),
        ("running_service", "finish", "active"),
        ("running_service", "roll_back", "active"),
    ],
)
def test_allowed_transitions(lifecycle: Lifecycle, state: str, action: str, expected: str) -> None:
    assert step(lifecycle, state, action) == expected


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("creating", "scale_out"),
        ("creating", "delete"),
        ("scaling_out", "scale_in"),
        ("deleted", "create"),
        ("deleted", "delete"),
        ("active", "create"),
        ("active", "finish"),
        ("stopped", "stop"),
        ("active", "start"),
        ("stopped", "scale_out"),
        ("stopped", "update_env"),
        ("stopping", "start"),
        ("starting", "stop"),
        ("updating", "recover"),
        ("recovering", "update_env"),
        ("active", "roll_back"),
    ],
)
def test_refused_actions(lifecycle: Lifecycle, state: str, action: str) -> None:
    with pytest.raises(LifecycleError, match=f"cannot {action.replace('_', ' ')} a cluster that is {state}"):
        step(lifecycle, state, action)


def test_unknown_action_is_refused(lifecycle: Lifecycle) -> None:
    with pytest.raises(LifecycleError, match="unknown action"):
        lifecycle.next_state("active", "explode")


@pytest.mark.parametrize("action", [a.name for a in ACTIONS])
def test_retry_reenters_the_failed_jobs_state(lifecycle: Lifecycle, action: str) -> None:
    assert lifecycle.retry_state("failed", action) == lifecycle.edges[action].running
    with pytest.raises(LifecycleError, match="only a failed one"):
        lifecycle.retry_state("active", action)


def test_refusal_lists_what_is_allowed(lifecycle: Lifecycle) -> None:
    with pytest.raises(
        LifecycleError,
        match="allowed now: stop, scale out, scale in, update env, recover, service, restart, delete",
    ):
        lifecycle.next_state("active", "create")
    assert lifecycle.allowed_actions("failed")[-1] == "retry"


def test_the_table_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="same transitional state"):
        Lifecycle(
            [Edge("a", ("active",), "updating", "active"), Edge("b", ("active",), "updating", "active")]
        )
    with pytest.raises(ValueError, match=r"not in records\.State"):
        Lifecycle([Edge("a", ("active",), "dancing", "active")])


def test_the_drawn_machine_has_every_edge_of_the_table(lifecycle: Lifecycle) -> None:
    drawn = {
        (source, t.dest, trigger)
        for trigger, event in lifecycle.machine.events.items()
        for source, transitions in event.transitions.items()
        for t in transitions
    }
    assert ("active", "scaling_out", "scale_out") in drawn
    assert ("updating", "active", "roll_back") in drawn
    assert ("failed", "deleting", "retry") in drawn


def test_every_transitional_state_can_finish_and_fail(lifecycle: Lifecycle) -> None:
    for state in TRANSITIONAL:
        assert lifecycle.end_state(state, ok=False) == "failed"
        assert lifecycle.end_state(state, ok=True) != "failed"


@pytest.mark.parametrize(
    ("state", "action", "after"),
    [
        ("active", "stop", "stopping"),
        ("stopped", "start", "starting"),
        ("active", "update_env", "updating"),
        ("active", "recover", "recovering"),
        ("stopped", "delete", "deleting"),
    ],
)
def test_lifecycle_actions(lifecycle: Lifecycle, state: str, action: str, after: str) -> None:
    assert lifecycle.next_state(state, action) == after


def test_stopped_and_started_finish_where_expected(lifecycle: Lifecycle) -> None:
    assert lifecycle.end_state("stopping", ok=True) == "stopped"
    assert lifecycle.end_state("starting", ok=True) == "active"
    # a clean rollback (an env update undone, a scaling refused by its pre_check) leaves the
    # cluster active; any other action's failure is a failure
    assert lifecycle.end_state("updating", ok=False, rolled_back=True) == "active"
    assert lifecycle.end_state("scaling_out", ok=False, rolled_back=True) == "active"
    assert lifecycle.end_state("scaling_in", ok=False, rolled_back=True) == "active"
    assert lifecycle.end_state("recovering", ok=False, rolled_back=True) == "failed"
