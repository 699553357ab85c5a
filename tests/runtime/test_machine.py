"""The lifecycle machine: which actions each state allows, and where they lead."""

from __future__ import annotations

import pytest

from pitrix.runtime.machine import ACTION_STATE, TRANSITIONAL, Lifecycle, LifecycleError


@pytest.fixture
def lifecycle() -> Lifecycle:
    return Lifecycle()


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
    ],
)
def test_allowed_transitions(lifecycle: Lifecycle, state: str, action: str, expected: str) -> None:
    model = lifecycle.add("c", state)
    assert lifecycle.apply(model, action) == (state, expected)
    assert model.state == expected


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
def test_refused_actions_change_nothing(lifecycle: Lifecycle, state: str, action: str) -> None:
    model = lifecycle.add("c", state)
    with pytest.raises(LifecycleError, match=f"cannot {action} a cluster that is {state}"):
        lifecycle.apply(model, action)
    assert model.state == state


def test_unknown_action_is_refused(lifecycle: Lifecycle) -> None:
    model = lifecycle.add("c", "active")
    with pytest.raises(LifecycleError, match="unknown action"):
        lifecycle.apply(model, "explode")


@pytest.mark.parametrize("target", sorted(set(ACTION_STATE.values())))
def test_retry_reenters_the_failed_jobs_state(lifecycle: Lifecycle, target: str) -> None:
    model = lifecycle.add("c", "failed")
    assert lifecycle.apply(model, "retry", target) == ("failed", target)


def test_refusal_lists_what_is_allowed(lifecycle: Lifecycle) -> None:
    model = lifecycle.add("c", "active")
    with pytest.raises(
        LifecycleError, match="allowed now: stop, scale_out, scale_in, update_env, recover, delete"
    ):
        lifecycle.apply(model, "create")


def test_models_share_one_machine_but_not_state(lifecycle: Lifecycle) -> None:
    a, b = lifecycle.add("a", "pending"), lifecycle.add("b", "active")
    lifecycle.apply(a, "create")
    assert (a.state, b.state) == ("creating", "active")
    lifecycle.revert(a, "pending")
    assert a.state == "pending"


def test_every_transitional_state_can_finish_and_fail(lifecycle: Lifecycle) -> None:
    for state in TRANSITIONAL:
        model = lifecycle.add(state, state)
        lifecycle.apply(model, "fail")
        assert model.state == "failed"


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
    model = lifecycle.add("c", state)
    assert lifecycle.apply(model, action) == (state, after)


def test_stopped_and_started_finish_where_expected() -> None:
    assert Lifecycle.finish_state("stopping") == "stopped"
    assert Lifecycle.finish_state("starting") == "active"
