"""The watch loop with the file backend: a change re-applies only the resources whose keys changed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_helpers import RecordingReporter, file_config, running

from pitrix.agent.agent import Agent
from pitrix.agent.backends.file import FileBackend


def add(root: Path, name: str, key: str) -> None:
    (root / f"etc/confd/templates/{name}.tmpl").write_text(f'{{{{getv "{key}"}}}}\n')
    (root / f"etc/confd/conf.d/{name}.toml").write_text(
        f'[template]\nsrc = "{name}.tmpl"\ndest = "/etc/{name}.conf"\nkeys = ["{key}"]\n'
        f'reload_cmd = "echo {name} >> reloads.log"\n'
    )


async def test_watch_reapplies_changed_resources_only(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("a: one\nb: two\n")
    add(vm_root, "ra", "/a")
    add(vm_root, "rb", "/b")
    config = file_config(vm_root, data, watch=True, run_commands=False)
    backend = FileBackend(config.files, poll_interval=0.02)
    reporter = RecordingReporter()
    agent = Agent(config, backend, reporter, announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        assert (vm_root / "etc/ra.conf").read_text() == "one\n"
        assert (vm_root / "reloads.log").read_text() == "ra\nrb\n"
        data.write_text("a: uno\nb: two\n")
        await asyncio.wait_for(agent.wait_rounds(2), 10)
        assert (vm_root / "etc/ra.conf").read_text() == "uno\n"
        assert (vm_root / "reloads.log").read_text() == "ra\nrb\nra\n"
        # A broken value is reported, and retried on the next change even if its keys did not move.
        # Reports come at most every report_interval: waited for, not read after the round.
        data.write_text("b: two\n")  # /a gone: getv fails
        await asyncio.wait_for(agent.wait_rounds(3), 10)
        await asyncio.wait_for(agent.wait_until(lambda: agent.unreported is None), 10)
        _revision, resources = reporter.applied_reports[-1]
        assert resources["ra"]["ok"] is False and "/a" in str(resources["ra"]["error"])
        assert resources["rb"] == {"ok": True, "error": None}
        assert (vm_root / "etc/ra.conf").read_text() == "uno\n"
        data.write_text("a: tres\nb: two\n")
        await asyncio.wait_for(agent.wait_rounds(4), 10)
        await asyncio.wait_for(agent.wait_until(lambda: agent.unreported is None), 10)
        assert reporter.applied_reports[-1][1]["ra"] == {"ok": True, "error": None}
        assert (vm_root / "etc/ra.conf").read_text() == "tres\n"
        # A resource added while running is picked up on the next round; a removed one is forgotten.
        (vm_root / "etc/confd/conf.d/rb.toml").unlink()
        data.write_text("a: tres\nb: dos\n")
        await asyncio.wait_for(agent.wait_rounds(5), 10)
        await asyncio.wait_for(agent.wait_until(lambda: agent.unreported is None), 10)
        assert set(reporter.applied_reports[-1][1]) == {"ra"}


async def test_onetime_reports_failure(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("a: one\n")
    add(vm_root, "ra", "/a")
    add(vm_root, "rb", "/b")
    config = file_config(vm_root, data, onetime=True)
    agent = Agent(config, FileBackend(config.files), RecordingReporter(), announce=lambda _info: None)
    assert await agent.run_onetime() is False
    assert agent.results["ra"].ok and not agent.results["rb"].ok
    assert agent.runner is None  # -onetime never runs lifecycle commands


async def test_failed_resource_is_retried_without_a_change(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("a: one\n")
    (vm_root / "etc/confd/templates/f.tmpl").write_text('{{getv "/a"}}\n')
    (vm_root / "etc/confd/conf.d/f.toml").write_text(
        '[template]\nsrc = "f.tmpl"\ndest = "/etc/f.conf"\nkeys = ["/a"]\n'
        'reload_cmd = "echo try >> tries.log; test -e daemon-up"\n'
    )
    config = file_config(vm_root, data, watch=True, run_commands=False, retry_interval=0.1)
    backend = FileBackend(config.files, poll_interval=0.02)
    reporter = RecordingReporter()
    agent = Agent(config, backend, reporter, announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        assert reporter.applied_reports[-1][1]["f"]["ok"] is False
        assert not (vm_root / "etc/f.conf").exists()  # a new file whose reload failed is removed
        (vm_root / "daemon-up").touch()
        retried = agent.wait_until(lambda: reporter.applied_reports[-1][1]["f"]["ok"] is True)
        await asyncio.wait_for(retried, 10)
        assert (vm_root / "etc/f.conf").read_text() == "one\n"


async def test_interval_mode_reapplies_everything_idempotently(vm_root: Path) -> None:
    data = vm_root / "data.yaml"
    data.write_text("a: one\n")
    add(vm_root, "ra", "/a")
    config = file_config(vm_root, data, watch=False, interval=0.05, run_commands=False)
    agent = Agent(config, FileBackend(config.files), RecordingReporter(), announce=lambda _info: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(3), 10)
        data.write_text("a: two\n")
        await asyncio.wait_for(agent.wait_rounds(agent.rounds + 2), 10)
    assert (vm_root / "etc/ra.conf").read_text() == "two\n"
    assert (vm_root / "reloads.log").read_text() == "ra\nra\n"  # in-sync rounds reload nothing
