"""The role's health check: taken from the metadata (``<prefix>/health/...``) over the config's, run on
its interval, each verdict reported; a changed check takes over at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from agent_helpers import RecordingReporter, file_config, running

from pitrix.agent.agent import Agent
from pitrix.agent.backends.file import FileBackend
from pitrix.agent.config import AgentConfig
from pitrix.agent.health import HealthCheck, health_from_values


async def wait_report(
    agent: Agent, reporter: RecordingReporter, ok: Callable[[bool, str | None], bool]
) -> None:
    """Until the newest health report satisfies ``ok``."""
    assert agent.health is not None
    async with asyncio.timeout(20):
        while not (reporter.health_reports and ok(*reporter.health_reports[-1])):
            await agent.wait_health_checks(agent.health.checks + 1)


async def test_check_from_metadata_wins_and_follows_changes(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("health:\n  cmd: echo sick; exit 2\n  interval: 0.05\n  timeout: 5\n")
    config = file_config(vm_root, data, watch=True, run_commands=False, health_cmd="true")
    backend = FileBackend(config.files, poll_interval=0.02)
    reporter = RecordingReporter()
    agent = Agent(config, backend, reporter, announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_health_checks(2), 20)  # on its interval, not once
        assert reporter.health_reports[0] == (False, "exit status 2: sick")
        assert agent.health is not None and agent.health.check == HealthCheck("echo sick; exit 2", 0.05, 5.0)
        # The runtime publishes a new check: it takes over without a restart.
        data.write_text("health:\n  cmd: test -e up\n  interval: 0.05\n")
        await wait_report(agent, reporter, lambda ok, error: error == "exit status 1: ")
        (vm_root / "up").touch()
        await wait_report(agent, reporter, lambda ok, error: ok and error is None)
        # The check leaves the metadata: the config's health_cmd is the fallback.
        data.write_text("other: 1\n")
        async with asyncio.timeout(20):
            while agent.health.check is None or agent.health.check.cmd != "true":
                await agent.wait_rounds(agent.rounds + 1)
        assert agent.health.check == HealthCheck("true", config.health_interval, config.health_timeout)


async def test_no_check_anywhere_runs_nothing(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("a: 1\n")
    config = file_config(vm_root, data, watch=True, run_commands=False)
    backend = FileBackend(config.files, poll_interval=0.02)
    reporter = RecordingReporter()
    agent = Agent(config, backend, reporter, announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 20)
        assert agent.health is not None and agent.health.check is None
        # A check published later starts at once.
        data.write_text("health:\n  cmd: exit 0\n")
        await asyncio.wait_for(agent.wait_health_checks(1), 20)
        assert reporter.health_reports == [(True, None)]


def test_bad_numbers_fall_back_to_the_config_naming_the_key(tmp_path: Path) -> None:
    config = AgentConfig(root=tmp_path, health_interval=7.0, health_timeout=9.0)
    values = {"/self/health/cmd": "check", "/self/health/interval": "soon", "/self/health/timeout": "-1"}
    check, problems = health_from_values(values, "/self", config)
    assert check == HealthCheck("check", 7.0, 9.0)
    assert problems == [
        "/self/health/interval: 'soon' is not a number; using 7",
        "/self/health/timeout: must be positive and finite, not '-1'; using 9",
    ]
    for bad in ("nan", "inf", "0"):
        check, problems = health_from_values({"/h/health/cmd": "c", "/h/health/interval": bad}, "/h", config)
        assert check == HealthCheck("c", 7.0, 9.0) and len(problems) == 1 and bad in problems[0]
    # A blank command is no check; the config's own is used, or none.
    assert health_from_values({"/self/health/cmd": "  "}, "/self", config) == (None, [])
    config.health_cmd = "fallback"
    assert health_from_values({}, "/self", config) == (HealthCheck("fallback", 7.0, 9.0), [])


async def test_onetime_has_no_health_checker(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("health:\n  cmd: exit 0\n")
    config = file_config(vm_root, data, onetime=True)
    agent = Agent(config, FileBackend(config.files), RecordingReporter(), announce=lambda _info: None)
    assert await agent.run_onetime() is True
    assert agent.health is None


async def test_one_change_is_one_round_with_the_window(vm_root: Path) -> None:
    """One change is one round: the watch started during a round does not fire on the change
    that round applied, and a change that finds the agent idle is not held for the window."""
    data = vm_root / "data.yaml"
    data.write_text("a: 1\n")
    # A long quiet period: the change (soon after the first round, but after it finished) must be
    # applied at once, not held in the window.
    config = file_config(vm_root, data, watch=True, run_commands=False, quiet_period=30.0, max_settle=0.3)
    backend = FileBackend(config.files, poll_interval=0.01)
    agent = Agent(config, backend, RecordingReporter(), announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 20)
        staged = data.with_suffix(".new")
        staged.write_text("a: 2\n")
        staged.rename(data)  # one change, never a half-written file seen as a second one
        await asyncio.wait_for(agent.wait_rounds(2), 20)
        assert agent.coalesced == 0
