"""What is fsynced and what is not: the agent's own state is, a rendered config is not (as confd),
and a rendered file a power loss left torn is repaired by the first round after a start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pitrix.agent import durable
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.render import TemplateCache
from pitrix.agent.resource import ApplyOptions, TemplateResource


def app_resource(root: Path) -> TemplateResource:
    (root / "etc/confd/templates/app.tmpl").write_text('mode={{getv "/app/mode"}}\n')
    toml = root / "etc/confd/conf.d/app.toml"
    toml.write_text(
        '[template]\nsrc = "app.tmpl"\nkeys = ["/app"]\ndest = "/etc/app.conf"\n'
        'reload_cmd = "echo r >> reloads.log"\n'
    )
    return TemplateResource.load(toml, load_config(root, None, Overrides(backend="env"), environ={}))


def staged_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors os.fsync was called on (the real fsync still runs)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_stage_beside_syncs_unless_told_not_to(tmp_path: Path, fsyncs: list[int]) -> None:
    dest = tmp_path / "f.conf"
    synced = durable.stage_beside(dest, b"a" * 200_000, 0o640, (os.geteuid(), os.getegid()))
    assert len(fsyncs) == 1
    assert synced.read_bytes() == b"a" * 200_000  # every byte, past one write's worth
    assert synced.parent == tmp_path and synced.name.startswith(".f.conf.")
    assert synced.stat().st_mode & 0o7777 == 0o640
    loose = durable.stage_beside(dest, b"b\n", 0o600, sync=False)
    assert len(fsyncs) == 1
    assert loose.read_bytes() == b"b\n" and loose.stat().st_mode & 0o7777 == 0o600
    assert loose != synced


def test_write_durably_syncs_file_and_directory(tmp_path: Path, fsyncs: list[int]) -> None:
    durable.write_durably(tmp_path / "ledger.json", b"{}", 0o600)
    assert len(fsyncs) == 2
    assert (tmp_path / "ledger.json").read_bytes() == b"{}"
    assert staged_leftovers(tmp_path) == []


def test_stage_beside_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(PermissionError):
        durable.stage_beside(tmp_path / "f.conf", b"x", 0o644)
    assert list(tmp_path.iterdir()) == []


async def test_rendered_config_not_fsynced_and_torn_file_repaired(vm_root: Path, fsyncs: list[int]) -> None:
    res = app_resource(vm_root)
    opts = ApplyOptions(file_io_on_loop=True)
    result = await res.process({"/app/mode": "fast"}, TemplateCache(), opts)
    assert result.ok and result.changed
    assert fsyncs == []
    dest = vm_root / "etc/app.conf"
    assert dest.read_text() == "mode=fast\n"
    # A power loss after the rename but before writeback: the file is there, empty. A restarted
    # agent's first round (every resource, the bytes compared) writes it again and reloads.
    dest.write_bytes(b"")
    again = await app_resource(vm_root).process({"/app/mode": "fast"}, TemplateCache(), opts)
    assert again.ok and again.changed
    assert dest.read_text() == "mode=fast\n"
    assert (vm_root / "reloads.log").read_text() == "r\nr\n"
    assert staged_leftovers(vm_root / "etc") == []
