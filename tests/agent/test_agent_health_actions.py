"""Health that acts: ``unhealthy_threshold`` failures in a row before the node is reported
unhealthy, healthy again at the first pass, and the ``action_cmd`` run once per streak that
reaches the threshold (bounded by its timeout), its result reported with the verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_helpers import RecordingReporter, file_config, running

from pitrix.agent.agent import Agent
from pitrix.agent.backends.file import FileBackend
from pitrix.agent.config import AgentConfig
from pitrix.agent.health import HealthCheck, health_from_values


def health_yaml(action: str, *, threshold: int = 3, action_timeout: float = 10) -> str:
    return (
        "health:\n"
        "  cmd: test -e up\n"
        "  interval: 0.02\n"
        f"  unhealthy_threshold: {threshold}\n"
        f"  action_cmd: {action!r}\n"
        f"  action_timeout: {action_timeout}\n"
    )


async def until(agent: Agent, condition: object) -> None:
    """Until ``condition()`` holds after a check (each check wakes this)."""
    assert agent.health is not None
    async with asyncio.timeout(20):
        while not condition():  # type: ignore[operator]
            await agent.wait_health_checks(agent.health.checks + 1)


def started(vm_root: Path, text: str) -> tuple[Agent, RecordingReporter]:
    data = vm_root / "data.yaml"
    data.write_text(text)
    config = file_config(vm_root, data, watch=True, run_commands=False)
    reporter = RecordingReporter()
    agent = Agent(
        config, FileBackend(config.files, poll_interval=0.02), reporter, announce=lambda _info: None
    )
    return agent, reporter


async def test_threshold_then_action_once_per_streak_then_healthy_again(vm_root: Path) -> None:
    (vm_root / "up").touch()
    # the action repairs the service (the check's file comes back) and leaves a trace of each run
    agent, reporter = started(vm_root, health_yaml("echo repaired >> actions.log; touch up"))
    async with running(agent):
        checker = agent.health
        assert checker is not None
        await until(agent, lambda: reporter.health_reports)
        assert reporter.health_reports[0] == (True, None) and reporter.health_details[0] == {"failures": 0}
        (vm_root / "up").unlink()
        await until(agent, lambda: checker.actions == 1 and checker.failures == 0)
        # from the streak's first failure (a check in flight at the unlink may have passed)
        first = next(i for i, d in enumerate(reporter.health_details) if d["failures"] == 1)
        del reporter.health_reports[:first], reporter.health_details[:first]
        verdicts = [
            (ok, d.get("failures"))
            for (ok, _), d in zip(reporter.health_reports, reporter.health_details, strict=True)
        ]
        # two failures still report healthy; the third reports unhealthy, then again with the
        # action's result; the repaired service passes its next check
        assert verdicts[:5] == [(True, 1), (True, 2), (False, 3), (False, 3), (True, 0)], verdicts
        action = reporter.health_details[3]["action"]
        assert isinstance(action, dict) and action["status"] == "successful" and action["exit_code"] == 0
        assert action["output_tail"] == "" and "action" not in reporter.health_details[4]
        assert reporter.health_reports[2][1] == "exit status 1: "
        assert (vm_root / "actions.log").read_text() == "repaired\n"


async def test_an_action_that_does_not_help_runs_once_and_its_failure_is_reported(vm_root: Path) -> None:
    (vm_root / "up").touch()
    agent, reporter = started(
        vm_root, health_yaml("echo tried >> actions.log; echo nope; exit 4", threshold=2)
    )
    async with running(agent):
        checker = agent.health
        assert checker is not None
        await until(agent, lambda: checker.passed)
        (vm_root / "up").unlink()
        await until(agent, lambda: checker.failures >= 6)
        assert checker.actions == 1 and (vm_root / "actions.log").read_text() == "tried\n"
        last = reporter.health_details[-1]
        assert reporter.health_reports[-1][0] is False
        assert last["action"] == {**last["action"], "status": "failed", "exit_code": 4, "output_tail": "nope"}  # type: ignore[dict-item]
        # healthy again, then a new streak: a new transition, the action runs again
        (vm_root / "up").touch()
        await until(agent, lambda: reporter.health_reports[-1] == (True, None))
        assert "action" not in reporter.health_details[-1]
        (vm_root / "up").unlink()
        await until(agent, lambda: checker.actions == 2)
        assert (vm_root / "actions.log").read_text() == "tried\ntried\n"


async def test_a_hung_action_is_cut_off_by_its_timeout_and_checks_go_on(vm_root: Path) -> None:
    agent, reporter = started(vm_root, health_yaml("exec sleep 60", threshold=1, action_timeout=0.3))
    async with running(agent):
        checker = agent.health
        assert checker is not None
        # never passed: unhealthy from the first report, the streak at the threshold at once
        await until(agent, lambda: checker.actions == 1 and checker.checks >= 3)
        assert reporter.health_reports[0] == (False, "exit status 1: ")
        action = next(d["action"] for d in reporter.health_details if "action" in d)
        assert isinstance(action, dict) and action["status"] == "failed"
        assert checker.actions == 1  # one streak, one action, whatever the checks after


async def test_never_passed_is_unhealthy_below_the_threshold(vm_root: Path) -> None:
    agent, reporter = started(vm_root, health_yaml("true", threshold=5))
    async with running(agent):
        await until(agent, lambda: len(reporter.health_reports) >= 2)
        assert reporter.health_reports[:2] == [(False, "exit status 1: ")] * 2
        assert [d["failures"] for d in reporter.health_details[:2]] == [1, 2]
        assert agent.health is not None and agent.health.actions == 0


def test_threshold_and_action_from_metadata_or_config(tmp_path: Path) -> None:
    config = AgentConfig(
        root=tmp_path, health_unhealthy_threshold=2, health_action_cmd="fix", health_action_timeout=5
    )
    values = {
        "/self/health/cmd": "check",
        "/self/health/unhealthy_threshold": "4",
        "/self/health/action_cmd": "restart it",
        "/self/health/action_timeout": "7",
    }
    check, problems = health_from_values(values, "/self", config)
    assert problems == [] and check is not None
    assert (check.threshold, check.action_cmd, check.action_timeout) == (4, "restart it", 7.0)
    check, problems = health_from_values(
        {"/self/health/cmd": "c", "/self/health/unhealthy_threshold": "0"}, "/self", config
    )
    assert check == HealthCheck("c", config.health_interval, config.health_timeout, 2, "", 5.0)
    assert problems == [
        "/self/health/unhealthy_threshold: must be a whole number of at least 1, not '0'; using 2"
    ]
    config.health_cmd = "fallback"
    assert health_from_values({}, "/self", config)[0] == HealthCheck(
        "fallback", config.health_interval, config.health_timeout, 2, "fix", 5.0
    )
