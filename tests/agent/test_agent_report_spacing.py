"""Applied reports in watch mode: a lone change is reported at once; changes within
``report_interval`` of the last report are reported together, the newest results only, when the
interval is up (or when the agent stops)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_helpers import RecordingReporter, file_config, running

from pitrix.agent.agent import Agent
from pitrix.agent.backends.file import FileBackend


def watching(vm_root: Path, interval: float) -> tuple[Agent, RecordingReporter, Path]:
    data = vm_root / "data.yaml"
    data.write_text("a: one\n")
    (vm_root / "etc/confd/templates/ra.tmpl").write_text('{{getv "/a"}}\n')
    (vm_root / "etc/confd/conf.d/ra.toml").write_text(
        '[template]\nsrc = "ra.tmpl"\ndest = "/etc/ra.conf"\nkeys = ["/a"]\n'
    )
    config = file_config(
        vm_root, data, watch=True, run_commands=False, report_interval=interval, heartbeat_interval=3600
    )
    reporter = RecordingReporter()
    agent = Agent(config, FileBackend(config.files, poll_interval=0.02), reporter, announce=lambda _i: None)
    return agent, reporter, data


def ra_ok(reporter: RecordingReporter) -> object:
    return reporter.applied_reports[-1][1]["ra"]["ok"]


async def test_reports_within_the_interval_wait_and_the_newest_goes(vm_root: Path) -> None:
    agent, reporter, data = watching(vm_root, interval=3600)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        assert len(reporter.applied_reports) == 1 and ra_ok(reporter) is True  # the first: at once
        for rounds, text in enumerate(["b: x\n", "a: two\n", "b: y\n"], start=2):  # /a gone, back, gone
            data.write_text(text)
            await asyncio.wait_for(agent.wait_rounds(rounds), 10)
            expected = "two\n" if rounds >= 3 else "one\n"  # a failed render leaves the file
            assert (vm_root / "etc/ra.conf").read_text() == expected
        assert len(reporter.applied_reports) == 1  # three rounds, none reported yet ...
        assert agent.unreported is not None and agent.unreported[1]["ra"]["ok"] is False
        assert agent.reports_sent == 1
    # ... and at stop the newest (the failure of the last round) goes, once.
    assert len(reporter.applied_reports) == 2 and ra_ok(reporter) is False
    assert agent.unreported is None


async def test_owed_report_sent_when_the_interval_is_up(vm_root: Path) -> None:
    agent, reporter, data = watching(vm_root, interval=0.05)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        data.write_text("b: x\n")
        await asyncio.wait_for(agent.wait_rounds(2), 10)
        # Whether round 2 went at once or was owed, the sender delivers it without a stop.
        await asyncio.wait_for(
            agent.wait_until(lambda: agent.unreported is None and ra_ok(reporter) is False), 10
        )
        assert agent.rounds == 2 and len(reporter.applied_reports) == 2


async def test_interval_zero_reports_every_round_at_once(vm_root: Path) -> None:
    agent, reporter, data = watching(vm_root, interval=0)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        for rounds, text in enumerate(["b: x\n", "a: two\n"], start=2):
            data.write_text(text)
            await asyncio.wait_for(agent.wait_rounds(rounds), 10)
            assert len(reporter.applied_reports) == rounds
        assert [r[1]["ra"]["ok"] for r in reporter.applied_reports] == [True, False, True]
