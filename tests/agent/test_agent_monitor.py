"""The role's monitor: its output read as numbers by name (JSON object or ``name value`` lines), only
the declared items reported, a failed or timed-out run reported without values, a new definition
taking over at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from agent_helpers import RecordingReporter, file_config, running

from pitrix.agent.agent import Agent
from pitrix.agent.backends.file import FileBackend
from pitrix.agent.monitor import MonitorSpec, monitor_from_values, parse_output


def test_json_object_output() -> None:
    values, problems = parse_output('{"connections": 12, "hit_ratio": "0.5", "name": "x", "up": true}\n')
    assert values == {"connections": 12.0, "hit_ratio": 0.5}
    assert [what for what, _ in problems] == ["name", "up"]


def test_name_value_lines() -> None:
    text = "# from /metrics\n\nqueue_depth 3\nbytes_total 1.5e9\nbroken line here\nratio NaN\nlatency abc\n"
    values, problems = parse_output(text)
    assert values == {"queue_depth": 3.0, "bytes_total": 1.5e9}
    messages = [message for _, message in problems]
    assert messages[0] == "line 5: 'broken line here' is not 'name value'"
    assert "ratio: 'NaN' is not a number; skipped" in messages
    assert "latency: 'abc' is not a number; skipped" in messages


def test_unreadable_json_and_not_an_object() -> None:
    assert parse_output('{"a": 1')[0] == {}
    assert "not" in parse_output('{"a": 1')[1][0][1]
    assert parse_output('["a", 1, 2]')[0] == {}


def test_definition_from_values() -> None:
    values = {
        "/monitor/cmd": "opt/app/stats",
        "/monitor/interval": "15",
        "/monitor/timeout": "oops",
        "/monitor/items/qps/unit": "1/s",
        "/monitor/items/qps/kind": "gauge",
        "/monitor/items/errors/kind": "counter",
    }
    spec, problems = monitor_from_values(values, "/")
    assert spec == MonitorSpec("opt/app/stats", 15.0, 10.0, frozenset({"qps", "errors"}))
    assert problems == ["/monitor/timeout: 'oops' is not a number; using 10"]
    assert monitor_from_values({"/monitor/interval": "5"}, "/") == (None, [])


def monitor_data(cmd: str, items: list[str], interval: float = 0.05, timeout: float = 5) -> str:
    doc = {"monitor": {"cmd": cmd, "interval": interval, "timeout": timeout, "items": {}}}
    for name in items:
        doc["monitor"]["items"][name] = {"unit": "", "kind": "gauge"}
    return yaml.safe_dump(doc)


async def next_report(agent: Agent, reporter: RecordingReporter) -> tuple[dict[str, float], str | None]:
    assert agent.monitor is not None
    await asyncio.wait_for(agent.monitor.wait_runs(agent.monitor.runs + 1), 20)
    return reporter.monitor_reports[-1]


def agent_on(vm_root: Path) -> tuple[Agent, RecordingReporter]:
    data = vm_root / "data.yaml"
    config = file_config(vm_root, data, watch=True, run_commands=False)
    reporter = RecordingReporter()
    agent = Agent(config, FileBackend(config.files, poll_interval=0.02), reporter, announce=lambda _: None)
    return agent, reporter


async def test_declared_items_reported_on_the_interval_and_a_new_definition_takes_over(
    vm_root: Path,
) -> None:
    data = vm_root / "data.yaml"
    (vm_root / "stats").write_text("a 1\nb 2.5\nextra 7\nc x\n")
    data.write_text(monitor_data("cat stats", ["a", "b", "c", "missing"]))
    agent, reporter = agent_on(vm_root)
    async with running(agent):
        assert agent.monitor is not None
        await asyncio.wait_for(agent.monitor.wait_runs(3), 20)  # on its interval, not once
        # declared and numeric: reported; undeclared (extra) ignored; non-number (c) skipped;
        # declared but not printed (missing): absent.
        assert reporter.monitor_reports[0] == ({"a": 1.0, "b": 2.5}, None)
        (vm_root / "stats").write_text('{"a": 3, "b": 4}')
        values, _ = await next_report(agent, reporter)
        values, _ = await next_report(agent, reporter)
        assert values == {"a": 3.0, "b": 4.0}
        # The runtime publishes another definition: it runs at once, with its own items.
        data.write_text(monitor_data("echo z 9; echo a 1", ["z"], interval=3600))
        async with asyncio.timeout(20):
            while not reporter.monitor_reports or reporter.monitor_reports[-1] != ({"z": 9.0}, None):
                await agent.monitor.wait_runs(agent.monitor.runs + 1)
        # The monitor leaves the metadata: the runner has none.
        data.write_text("other: 1\n")
        async with asyncio.timeout(20):
            while agent.monitor.spec is not None:
                await agent.wait_rounds(agent.rounds + 1)


async def test_a_run_past_its_timeout_reports_no_values(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text(monitor_data("echo a 1; sleep 30", ["a"], timeout=0.3))
    agent, reporter = agent_on(vm_root)
    async with running(agent):
        values, error = await next_report(agent, reporter)
    assert values == {}
    assert error is not None and error.startswith("timed out"), error


async def test_a_failing_or_unreadable_run_says_why(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text(monitor_data("echo no stats here >&2; exit 3", ["a"]))
    agent, reporter = agent_on(vm_root)
    async with running(agent):
        assert await next_report(agent, reporter) == ({}, "exit status 3: no stats here")
        data.write_text(monitor_data("echo '{not json'", ["a"]))
        async with asyncio.timeout(20):
            while reporter.monitor_reports[-1][1] in (None, "exit status 3: no stats here"):
                await next_report(agent, reporter)
        values, error = reporter.monitor_reports[-1]
    assert values == {}
    assert error is not None and "starts as JSON but is not" in error
