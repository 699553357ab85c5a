"""The apply transaction with real files and real shell commands on a VM root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pitrix.agent.confdir import load_resources
from pitrix.agent.config import AgentConfig, Overrides, load_config
from pitrix.agent.errors import ResourceError
from pitrix.agent.render import TemplateCache
from pitrix.agent.resource import ApplyOptions, TemplateResource

TEMPLATE = 'mode={{getv "/app/mode"}}\nport={{getv "/app/port" "80"}}\n'


def make_config(root: Path, prefix: str = "") -> AgentConfig:
    return load_config(root, None, Overrides(backend="env", prefix=prefix), environ={})


def add_resource(root: Path, name: str, body: str, template: str = TEMPLATE) -> Path:
    (root / "etc/confd/templates" / f"{name}.tmpl").write_text(template)
    toml = root / "etc/confd/conf.d" / f"{name}.toml"
    toml.write_text(f'[template]\nsrc = "{name}.tmpl"\nkeys = ["/app"]\n{body}')
    return toml


def load(root: Path, name: str, prefix: str = "") -> TemplateResource:
    return TemplateResource.load(root / "etc/confd/conf.d" / f"{name}.toml", make_config(root, prefix))


def staged_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("on_loop", [False, True], ids=["worker-thread", "on-loop"])
async def test_render_install_then_in_sync_without_reload(vm_root: Path, on_loop: bool) -> None:
    add_resource(vm_root, "app", 'dest = "/etc/app.conf"\nreload_cmd = "echo r >> reloads.log"\n')
    res = load(vm_root, "app")
    cache = TemplateCache()
    opts = ApplyOptions(file_io_on_loop=on_loop)
    result = await res.process({"/app/mode": "fast"}, cache, opts)
    assert result.ok and result.changed and result.error is None
    dest = vm_root / "etc/app.conf"
    assert dest.read_text() == "mode=fast\nport=80\n"
    assert dest.stat().st_mode & 0o7777 == 0o644
    assert (vm_root / "reloads.log").read_text() == "r\n"
    again = await res.process({"/app/mode": "fast"}, cache, opts)
    assert again.ok and not again.changed
    assert (vm_root / "reloads.log").read_text() == "r\n"  # unchanged: no reload
    changed = await res.process({"/app/mode": "slow", "/app/port": "81"}, cache, opts)
    assert changed.changed and dest.read_text() == "mode=slow\nport=81\n"
    assert (vm_root / "reloads.log").read_text() == "r\nr\n"
    assert staged_leftovers(vm_root / "etc") == []


async def test_mode_and_owner_applied_and_kept(vm_root: Path) -> None:
    add_resource(vm_root, "m", 'dest = "/etc/m.conf"\nmode = "0600"\nuid = 1234\ngid = 1235\n')
    result = await load(vm_root, "m").process({"/app/mode": "x"}, TemplateCache(), ApplyOptions())
    assert result.ok
    st = (vm_root / "etc/m.conf").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1234, 1235)
    # Without a mode, an existing file keeps its own (as confd does); a changed mode alone is a change.
    add_resource(vm_root, "k", 'dest = "/etc/k.conf"\n')
    (vm_root / "etc/k.conf").write_text("old\n")
    os.chmod(vm_root / "etc/k.conf", 0o640)
    await load(vm_root, "k").process({"/app/mode": "x"}, TemplateCache(), ApplyOptions())
    assert (vm_root / "etc/k.conf").stat().st_mode & 0o7777 == 0o640
    add_resource(vm_root, "k", 'dest = "/etc/k.conf"\nmode = "0444"\nreload_cmd = "echo r >> k.log"\n')
    result = await load(vm_root, "k").process({"/app/mode": "x"}, TemplateCache(), ApplyOptions())
    assert result.changed and (vm_root / "etc/k.conf").stat().st_mode & 0o7777 == 0o444
    assert (vm_root / "k.log").read_text() == "r\n"


@pytest.mark.parametrize("on_loop", [False, True], ids=["worker-thread", "on-loop"])
async def test_check_cmd_rejects_and_dest_untouched(vm_root: Path, on_loop: bool) -> None:
    add_resource(
        vm_root,
        "c",
        'dest = "/etc/c.conf"\ncheck_cmd = "grep -q mode=good {{.src}} || { echo bad config >&2; exit 1; }"\n'
        'reload_cmd = "echo r >> reloads.log"\n',
    )
    res = load(vm_root, "c")
    opts = ApplyOptions(file_io_on_loop=on_loop)
    assert (await res.process({"/app/mode": "good"}, TemplateCache(), opts)).ok
    dest = vm_root / "etc/c.conf"
    before = (dest.read_bytes(), dest.stat().st_mtime_ns)
    result = await res.process({"/app/mode": "evil"}, TemplateCache(), ApplyOptions(file_io_on_loop=on_loop))
    assert not result.ok and not result.changed
    assert result.error is not None and "check_cmd failed (exit status 1)" in result.error
    assert "bad config" in result.error
    assert (dest.read_bytes(), dest.stat().st_mtime_ns) == before
    assert (vm_root / "reloads.log").read_text() == "r\n"
    assert staged_leftovers(vm_root / "etc") == []


@pytest.mark.parametrize("on_loop", [False, True], ids=["worker-thread", "on-loop"])
async def test_reload_failure_restores_previous_and_reloads_again(vm_root: Path, on_loop: bool) -> None:
    add_resource(
        vm_root,
        "r",
        'dest = "/etc/r.conf"\n'
        'reload_cmd = "head -1 etc/r.conf >> reloads.log; grep -q mode=good etc/r.conf"\n',
    )
    res = load(vm_root, "r")
    cache = TemplateCache()
    assert (await res.process({"/app/mode": "good"}, cache, ApplyOptions(file_io_on_loop=on_loop))).ok
    os.chmod(vm_root / "etc/r.conf", 0o640)
    result = await res.process({"/app/mode": "broken"}, cache, ApplyOptions(file_io_on_loop=on_loop))
    assert not result.ok and result.changed
    assert result.error is not None
    assert (
        "reload_cmd failed (exit status 1)" in result.error
        and "previous file restored and reloaded" in result.error
    )
    assert (vm_root / "etc/r.conf").read_text() == "mode=good\nport=80\n"
    assert (vm_root / "etc/r.conf").stat().st_mode & 0o7777 == 0o640
    assert (vm_root / "reloads.log").read_text().splitlines() == ["mode=good", "mode=broken", "mode=good"]


async def test_reload_failure_of_a_new_file_removes_it(vm_root: Path) -> None:
    add_resource(vm_root, "n", 'dest = "/etc/n.conf"\nreload_cmd = "echo r >> reloads.log; exit 2"\n')
    result = await load(vm_root, "n").process({"/app/mode": "x"}, TemplateCache(), ApplyOptions())
    assert not result.ok and result.error is not None
    assert "new file removed, reload after restore also failed (exit status 2)" in result.error
    assert not (vm_root / "etc/n.conf").exists()
    assert (vm_root / "reloads.log").read_text() == "r\nr\n"


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ('{{getv "/app/missing"}}', "missing"),
        ("{{if}}", "t.tmpl"),
        ('{{nosuchfunc "x"}}', "nosuchfunc"),
    ],
)
async def test_template_errors_leave_dest_untouched(vm_root: Path, template: str, match: str) -> None:
    add_resource(vm_root, "t", 'dest = "/etc/t.conf"\nreload_cmd = "echo r >> reloads.log"\n', template)
    (vm_root / "etc/t.conf").write_text("keep\n")
    result = await load(vm_root, "t").process({"/app/mode": "x"}, TemplateCache(), ApplyOptions())
    assert not result.ok and result.error is not None and match in result.error
    assert (vm_root / "etc/t.conf").read_text() == "keep\n"
    assert not (vm_root / "reloads.log").exists()
    assert staged_leftovers(vm_root / "etc") == []


async def test_noop_sync_only_and_keep_stage_file(vm_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_resource(
        vm_root, "o", 'dest = "/etc/o.conf"\ncheck_cmd = "exit 1"\nreload_cmd = "echo r >> reloads.log"\n'
    )
    (vm_root / "etc/o.conf").write_text("mode=old\nport=80\n")
    res = load(vm_root, "o")
    result = await res.process({"/app/mode": "new"}, TemplateCache(), ApplyOptions(noop=True))
    assert result.ok and result.changed
    assert (vm_root / "etc/o.conf").read_text() == "mode=old\nport=80\n"
    out = capsys.readouterr().out
    assert "-mode=old" in out and "+mode=new" in out
    # sync-only: neither the (failing) check nor the reload runs.
    result = await res.process({"/app/mode": "new"}, TemplateCache(), ApplyOptions(sync_only=True))
    assert result.ok and (vm_root / "etc/o.conf").read_text() == "mode=new\nport=80\n"
    assert not (vm_root / "reloads.log").exists()
    result = await res.process(
        {"/app/mode": "newer"}, TemplateCache(), ApplyOptions(sync_only=True, keep_stage_file=True)
    )
    assert result.ok  # the staged file was renamed into place: nothing left to keep
    result = await res.process({"/app/mode": "newest"}, TemplateCache(), ApplyOptions(keep_stage_file=True))
    assert not result.ok  # check_cmd fails: the staged file is kept for inspection
    kept = staged_leftovers(vm_root / "etc")
    assert len(kept) == 1 and (vm_root / "etc" / kept[0]).read_text() == "mode=newest\nport=80\n"


async def test_prefixes_and_paths_under_root(vm_root: Path) -> None:
    (vm_root / "etc/confd/templates/p.tmpl").write_text('{{getv "/host/ip"}} {{len (ls "/hosts")}}\n')
    (vm_root / "etc/confd/conf.d/p.toml").write_text(
        '[template]\nsrc = "/p.tmpl"\ndest = "../../opt/p.conf"\nprefix = "app"\nkeys = ["/host", "/hosts"]\n'
    )
    res = load(vm_root, "p", prefix="/self")
    assert res.src == vm_root / "etc/confd/templates/p.tmpl"
    assert res.prefix == "/self/app" and res.keys == ["/self/app/host", "/self/app/hosts"]
    assert res.dest == vm_root / "opt/p.conf"
    values = {
        "/self/app/host/ip": "10.0.0.1",
        "/self/app/hosts/a": "1",
        "/self/app/hosts/b": "2",
        "/other": "x",
    }
    assert (await res.process(values, TemplateCache(), ApplyOptions())).ok
    assert (vm_root / "opt/p.conf").read_text() == "10.0.0.1 2\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('dest = "/x"\n', "template.src: required"),
        ('src = "a.tmpl"\n', "template.dest: required"),
        ('src = "a.tmpl"\ndest = "/x"\nmode = "0999"\n', "template.mode"),
        ('src = "a.tmpl"\ndest = "/x"\nkeys = "/a"\n', "template.keys: must be a list"),
        ('src = "a.tmpl"\ndest = "/x"\nowner = "no-such-user-here"\n', "template.owner: no such user"),
        ('src = "a.tmpl"\ndest = "/x"\nuid = -1\n', "template.uid"),
        ('src = "a.tmpl"\ndest = "/x"\nreload = "x"\n', "template.reload: unknown key"),
    ],
)
def test_bad_resource_names_the_key(vm_root: Path, body: str, match: str) -> None:
    path = vm_root / "etc/confd/conf.d/bad.toml"
    path.write_text("[template]\n" + body)
    with pytest.raises(ResourceError, match=match):
        TemplateResource.load(path, make_config(vm_root))


def test_resource_files_skip_hidden_disabled_and_others(vm_root: Path) -> None:
    conf_d = vm_root / "etc/confd/conf.d"
    for name in ("b.toml", "a.toml", ".hidden.toml", "_off.toml", "notes.txt"):
        (conf_d / name).write_text('[template]\nsrc = "a.tmpl"\ndest = "/a"\n')
    (conf_d / "broken.toml").write_text("[template\n")
    resources, errors = load_resources(make_config(vm_root))
    assert [r.name for r in resources] == ["a", "b"]
    assert list(errors) == ["broken"] and "invalid TOML" in errors["broken"]
