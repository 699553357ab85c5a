"""The appcenter profile's agent behaviour apart from the metadata proxy: confd-yunify's
number-aware comparisons, cmd.info.toml skipped, a failed reload leaving the new file, the
settings and their defaults, and what the runtime writes for such an app."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import structlog
from agent_helpers import AGENT_BIN, agent_env, file_config

from pitrix.agent.confdir import ConfDir
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.errors import ConfigError
from pitrix.agent.render import RenderError, TemplateCache
from pitrix.agent.resource import ApplyOptions, TemplateResource
from pitrix.gotemplate import TemplateError, parse
from pitrix.gotemplate.yunify import COMPARE_FUNCS
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import identity
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.userdata import AGENT_CONFIG, agent_files

# Each expression's result under confd-yunify's functions (checked against its Go source built
# with Go 1.19, the toolchain that builds confd here): numbers in strings compare as numbers,
# non-numbers never fail, strings compare as strings only when both are non-numbers.
COMPARISONS = [
    ('eq "1" 1', True),
    ('eq "1.0" 1', True),
    ('eq "1.0" "1"', True),
    ('eq "01" "1"', True),
    ('eq "+1" 1', True),
    ('eq "1e3" 1000', False),
    ('eq "1.5e3" 1500', True),
    ('eq "abc" 1', False),
    ('eq "abc" "abc"', True),
    ('eq "abc" "abd"', False),
    ('eq "true" true', False),
    ("eq true true", True),
    ("eq 1 1.0", True),
    ('eq "9223372036854775808" "9223372036854775808"', True),
    ('eq "9223372036854775807" 9223372036854775807', True),
    ('eq " 1" 1', False),
    ('eq "1_0" 10', False),
    ('eq "0x10" 16', False),
    ('eq "0x1.8p1" 3', True),
    ('eq "inf" "inf"', True),
    ('eq "nan" "nan"', True),
    ('eq "1.e1" 10', True),
    ('eq ".5" 0.5', True),
    ('eq "." "."', True),
    ('eq "" ""', True),
    ('eq "" 0', False),
    ("eq nil nil", True),
    ('ne "1" 1', False),
    ('ne "2" "02"', False),
    ('ne "x" 1', True),
    ('lt "10" "9"', False),
    ('lt "10" 9', False),
    ('lt "9" "10"', True),
    ('lt "abc" "abd"', True),
    ('lt "abd" "abc"', False),
    ('lt "abc" 5', True),
    ('lt 5 "abc"', False),
    ('lt "abc" -5', False),
    ('lt "1e3" 999', False),
    ('lt "inf" 5', False),
    ('lt "-inf" 5', True),
    ('lt "nan" 5', False),
    ('ge "nan" 5', False),
    ('lt "1e400" 5', False),
    ('lt "x" "1e400"', False),
    ('lt "1_000" 5', False),
    ('lt "0x10" 20', True),
    ('lt "0x1p4" 20', True),
    ('lt "0x1p4" 15', False),
    ("lt true 1", True),
    ("lt nil 1", True),
    ('lt (list "a" "b") 3', True),
    ('gt (list "a" "b") 1', True),
    ('le "3" 3', True),
    ('le "3.0" "3"', True),
    ('ge "" 0', True),
    ('gt "" 0', False),
    ('le "" ""', True),
    ('ge "b" "a"', True),
    ('gt "é" "z"', True),
    ("lt 1 2.5", True),
    ('gt "4096" 1024', True),
    ('lt "Infinity" 1', False),
    ('lt "infin" 1', True),
    ('lt "+nan" 1', True),
    ('ge "+nan" 0', True),
    ('eq "0x_1p4" 16', False),
    ('eq "0x1_0p0" 16', False),
    ('eq "0x1p1_0" 1024', False),
    ('eq "1e-400" 0', False),
    ('eq "1.0e-400" 0', True),
    ('eq "-0" 0', True),
    ('eq "-0.0" 0', True),
    ('eq "1.7976931348623159e308" "x"', False),
    ('lt "1_0.5" 10.6', True),
    ('lt "1_0.5" 10.4', False),
    ('lt "_1" 0', False),
    ('lt "1_" 0', False),
    ('lt "1__0" 0', False),
    ('lt "1_.5" 0', False),
    ('lt "1._5" 0', False),
    ('lt "1e1_0" 1e11', True),
    ('lt "1e_10" 1', True),
    ('lt "0x_1p4" 17', True),
    ('lt "0x1p1_0" 1025', True),
    ('lt "0x1.p0" 1.5', True),
    ('lt "0x.8p1" 1.5', True),
    ('lt "0x1" 5', True),
    ('lt "0x" 5', True),
    ('lt "0b1" 5', True),
    ('lt "1E3" 1001', True),
    ('lt "+.5e-1" 1', True),
    ('lt "١" 5', True),
    ('eq "١" "١"', True),
    ('eq "1.0" "١.0"', False),
    ('lt "0x1p-1080" 1', True),
    ('lt "0x1p2000" 1', False),
    ('eq 5 "5"', True),
    ('eq "5" 5.0', True),
]


@pytest.mark.parametrize(("expr", "expected"), COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons_as_confd_yunify(expr: str, expected: bool) -> None:
    funcs = {**COMPARE_FUNCS, "list": lambda *a: list(a)}
    assert parse("{{" + expr + "}}", "t", funcs).execute() == str(expected).lower()


@pytest.mark.parametrize("expr", ['eq "a" "a" "a"', 'lt "1" "2" "3"', 'gt "1"'])
def test_comparisons_take_two_arguments(expr: str) -> None:
    with pytest.raises(TemplateError, match="wrong number of args"):
        parse("{{" + expr + "}}", "t", COMPARE_FUNCS).execute()


def test_render_compares_numbers_only_when_asked(tmp_path: Path) -> None:
    src = tmp_path / "t.tmpl"
    src.write_text('{{if gt (getv "/env/port") 1024}}high{{else}}low{{end}} {{eq (getv "/host/sid") 1}}\n')
    values = {"/env/port": "8080", "/host/sid": "1"}
    assert TemplateCache("yunify").render(src, values) == "high true\n"
    with pytest.raises(RenderError, match="incompatible types for comparison"):
        TemplateCache().render(src, values)  # Go's builtins: the default, byte-identical to confd


def test_profile_settings_and_defaults(tmp_path: Path) -> None:
    def config(env: dict[str, str] | None = None, **given: str) -> tuple[str, str, str]:
        cfg = load_config(tmp_path, None, Overrides(backend="env", **given), environ=env or {})  # type: ignore[arg-type]
        return cfg.profile, cfg.metadata_listen, cfg.template_compare

    assert config() == ("native", "off", "go")
    assert config(template_compare="yunify") == ("native", "off", "yunify")
    assert config(profile="appcenter") == ("appcenter", "127.0.0.88:80", "yunify")
    assert config({"PITRIX_VM_IP": "127.100.0.7"}, profile="appcenter")[1] == "127.100.0.7:80"
    assert config(profile="appcenter", metadata_listen="off", template_compare="go")[1:] == ("off", "go")
    for given, field in (
        ({"profile": "aws"}, "profile"),
        ({"template_compare": "lua"}, "template_compare"),
        ({"metadata_listen": "127.0.0.88:80"}, "appcenter profile only"),
        ({"profile": "appcenter", "metadata_listen": "0.0.0.0:80"}, "not all of them"),
        ({"profile": "appcenter", "metadata_listen": "metadata:80"}, "not an IPv4 address"),
        ({"profile": "appcenter", "metadata_listen": "127.0.0.88"}, "ADDR:PORT"),
    ):
        with pytest.raises(ConfigError, match=field):
            config(**given)
    (tmp_path / "etc/pitrix").mkdir(parents=True)
    (tmp_path / "etc/pitrix/agent.toml").write_text('[pitrix]\nprofile = "appcenter"\n')
    assert load_config(tmp_path, None, Overrides(backend="env"), environ={}).profile == "appcenter"
    (tmp_path / "etc/pitrix/agent.toml").write_text('profile = "appcenter"\ntemplate_compare = "go"\n')
    top = load_config(tmp_path, None, Overrides(backend="env"), environ={})
    assert (top.profile, top.template_compare) == ("appcenter", "go")


def test_runtime_writes_the_profile_for_appcenter_apps() -> None:
    def pitrix_table(**kw: str) -> dict[str, object]:
        doc = tomllib.loads(agent_files(["http://127.0.0.9:8080"], **kw)[AGENT_CONFIG].decode())  # type: ignore[arg-type]
        return dict(doc["pitrix"])

    assert pitrix_table(profile="appcenter")["profile"] == "appcenter"
    assert "profile" not in pitrix_table()
    # What the runtime's steps hand to userdata: the app's own profile.
    for profile in ("appcenter", "native"):
        app = parse_spec(
            {"name": "a", "profile": profile, "roles": [{"name": "n_1", "count": 1, "image": "x"}]}
        )
        ctx = JobContext(
            store=None,  # type: ignore[arg-type]  # agent_files reads the cluster and metadata records only
            cluster=Cluster(id="cl-1", name="a", owner="o", runtime="r", app=app, counts={"n_1": 1}),
            job=Job(id="j-1", cluster_id="cl-1", action="create"),
            provider=None,  # type: ignore[arg-type]
            metadata=MetadataCluster(owner="o", runtime="r", name="m"),
            metad=None,  # type: ignore[arg-type]
            agents=None,  # type: ignore[arg-type]
            sealer=None,  # type: ignore[arg-type]
            keypairs=None,  # type: ignore[arg-type]
        )
        doc = tomllib.loads(identity.agent_files(ctx, "n_1")[AGENT_CONFIG].decode())
        assert doc["pitrix"].get("profile", "native") == profile


CMD_INFO = "\n".join(
    [
        "[template]",
        'src = "cmd.info.tmpl"',
        'dest = "/opt/cmd.info"',
        'keys = ["/cmd"]',
        'reload_cmd = "sh /opt/cmd.info"',
        "",
    ]
)


def appcenter_root(root: Path) -> Path:
    conf = root / "etc/confd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "templates").mkdir(parents=True)
    (conf / "conf.d/cmd.info.toml").write_text(CMD_INFO)
    (conf / "templates/cmd.info.tmpl").write_text('{{getv "/cmd/cmd" ""}}\n')
    (conf / "conf.d/port.toml").write_text(
        '[template]\nsrc = "port.tmpl"\ndest = "/etc/port.conf"\nkeys = ["/env"]\n'
    )
    (conf / "templates/port.tmpl").write_text('{{if ge (getv "/env/port") 1024}}high{{else}}low{{end}}\n')
    data = root / "data.yaml"
    data.write_text("env:\n  port: '8080'\ncmd:\n  cmd: echo ran >> /ran.log\n")
    return data


def test_cmd_info_is_skipped_once_in_the_appcenter_profile(tmp_path: Path) -> None:
    data = appcenter_root(tmp_path)
    confdir = ConfDir(file_config(tmp_path, data, profile="appcenter"))
    with structlog.testing.capture_logs() as logs:
        names = [[r.name for r in confdir.load()[0]] for _ in range(3)]
    assert names == [["port"]] * 3
    assert [e["event"] for e in logs if e.get("resource") == "cmd.info"] == [
        "resource skipped: the agent's command runner runs /self/cmd itself"
    ]
    native = ConfDir(file_config(tmp_path, data))
    assert [r.name for r in native.load()[0]] == ["cmd.info", "port"]


def test_one_shot_in_the_appcenter_profile(tmp_path: Path) -> None:
    """The real command line: --profile appcenter renders with number-aware comparisons and
    leaves cmd.info alone (its reload would run /self/cmd a second time)."""
    data = appcenter_root(tmp_path)
    args = [str(AGENT_BIN), "--root", str(tmp_path), "-onetime", "-backend", "file", "-file", str(data)]
    done = subprocess.run(
        [*args, "--profile", "appcenter"], env=agent_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "etc/port.conf").read_text() == "high\n"
    assert not (tmp_path / "opt/cmd.info").exists() and not (tmp_path / "ran.log").exists()
    assert done.stderr.count("resource skipped") == 1
    native = subprocess.run(args, env=agent_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert native.returncode == 1 and "incompatible types for comparison" in native.stderr


def reload_resource(root: Path, profile: str) -> TemplateResource:
    conf = root / "etc/confd"
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "templates").mkdir(parents=True, exist_ok=True)
    (conf / "templates/ctl.tmpl").write_text(
        '#!/bin/sh\necho {{getv "/app/mode"}} >> ran.log\ntest {{getv "/app/mode"}} = good\n'
    )
    toml = conf / "conf.d/ctl.toml"
    toml.write_text(
        '[template]\nsrc = "ctl.tmpl"\ndest = "/opt/ctl.sh"\nkeys = ["/app"]\nreload_cmd = "sh opt/ctl.sh"\n'
    )
    return TemplateResource.load(
        toml, load_config(root, None, Overrides(backend="env", profile=profile), environ={})
    )


@pytest.mark.parametrize("profile", ["appcenter", "native"])
async def test_a_failed_reload(tmp_path: Path, profile: str) -> None:
    """appcenter: the generated script stays and ran once (as confd); native: the old one is put
    back and run again."""
    res = reload_resource(tmp_path, profile)
    cfg = load_config(tmp_path, None, Overrides(backend="env", profile=profile), environ={})
    opts, cache = ApplyOptions.from_config(cfg), TemplateCache()
    assert (await res.process({"/app/mode": "good"}, cache, opts)).ok
    result = await res.process({"/app/mode": "bad"}, cache, opts)
    assert not result.ok and result.changed and result.error is not None
    script = (tmp_path / "opt/ctl.sh").read_text()
    ran = (tmp_path / "ran.log").read_text().split()
    if profile == "appcenter":
        assert "new file left in place" in result.error
        assert "echo bad" in script and ran == ["good", "bad"]
        # Next round: the file is what the values say, nothing runs again (confd's behaviour too).
        assert (await res.process({"/app/mode": "bad"}, cache, opts)).ok
        assert (tmp_path / "ran.log").read_text().split() == ["good", "bad"]
    else:
        assert "previous file restored and reloaded" in result.error
        assert "echo good" in script and ran == ["good", "bad", "good"]


def test_the_proxy_loads_only_when_it_starts(tmp_path: Path) -> None:
    """Reading an appcenter config and building the agent does not import the proxy: only an
    appcenter agent's run_forever does (every other agent never pays for it)."""
    code = (
        "import sys, json\nfrom pathlib import Path\n"
        "from pitrix.agent.config import Overrides, load_config\n"
        "from pitrix.agent.agent import build_agent\n"
        f"load_config(Path({str(tmp_path)!r}), None, Overrides(backend='env', profile='appcenter'),"
        " environ={})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pitrix.agent'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "pitrix.agent.profiles" in loaded
    assert "pitrix.agent.metadata_proxy" not in loaded and "pitrix.agent.hostsfile" not in loaded


@pytest.mark.parametrize("profile", ["appcenter", "native"])
async def test_a_template_of_etc_hosts_keeps_the_metadata_line(tmp_path: Path, profile: str) -> None:
    """Images that render /etc/hosts themselves (HBase, Storm) keep the proxy's name resolving,
    and the file stays in sync with what they render (no reload on every round)."""
    conf = tmp_path / "etc/confd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "templates").mkdir(parents=True)
    (conf / "templates/hosts.tmpl").write_text('127.0.0.1 localhost\n{{getv "/host/ip"}} node-1\n')
    toml = conf / "conf.d/hosts.toml"
    toml.write_text(
        '[template]\nsrc = "hosts.tmpl"\ndest = "/etc/hosts"\nkeys = ["/host"]\n'
        'reload_cmd = "echo r >> r.log"\n'
    )
    cfg = load_config(
        tmp_path, None, Overrides(backend="env", profile=profile), environ={"PITRIX_VM_IP": "127.100.0.7"}
    )
    res, opts, cache = TemplateResource.load(toml, cfg), ApplyOptions.from_config(cfg), TemplateCache()
    first = await res.process({"/host/ip": "127.100.0.7"}, cache, opts)
    again = await res.process({"/host/ip": "127.100.0.7"}, cache, opts)
    assert first.ok and first.changed and again.ok and not again.changed
    extra = "127.100.0.7 metadata\n" if profile == "appcenter" else ""
    assert (tmp_path / "etc/hosts").read_text() == "127.0.0.1 localhost\n127.100.0.7 node-1\n" + extra
    assert (tmp_path / "r.log").read_text() == "r\n"


def test_an_empty_getv_default_is_none_as_in_confd_yunify(tmp_path: Path) -> None:
    """confd-yunify's memkv ignores an empty default: a missing key stops the render; the default
    mode (confd's goldens) keeps rendering the empty default."""
    src = tmp_path / "t.tmpl"
    src.write_text('[{{ getv "/missing" "" }}][{{ getv "/missing" "d" }}][{{ getv "/here" "" }}]\n')
    values = {"/here": "h"}
    assert TemplateCache().render(src, values) == "[][d][h]\n"
    with pytest.raises(RenderError, match="key does not exist: /missing"):
        TemplateCache("yunify").render(src, values)
    src.write_text('[{{ getv "/missing" "d" }}][{{ getv "/here" "" }}]\n')
    assert TemplateCache("yunify").render(src, values) == "[d][h]\n"
