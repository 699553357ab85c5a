"""The agent's config file and command line: defaults, precedence, paths under the root, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitrix.agent.config import Overrides, load_config
from pitrix.agent.errors import ConfigError
from pitrix.agent.main import build_parser, config_from_args


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_default_file_under_root_and_paths_resolved(tmp_path: Path) -> None:
    write(
        tmp_path / "etc/pitrix/agent.toml",
        'backend = "metad"\nnodes = ["127.100.0.2:8080"]\nconfdir = "/etc/confd"\nwatch = true\n'
        '[pitrix]\nstate_dir = "/var/lib/pitrix-agent"\nheartbeat_interval = 2\n',
    )
    cfg = load_config(tmp_path, environ={"PITRIX_VM_IP": "127.100.0.7"})
    assert cfg.confdir == tmp_path / "etc/confd"
    assert cfg.state_dir == tmp_path / "var/lib/pitrix-agent"
    assert cfg.prefix == "/self"  # metad default
    assert cfg.watch is True
    assert cfg.heartbeat_interval == 2.0
    assert cfg.bind_address == "127.100.0.7"


def test_absent_default_file_is_fine_but_named_file_must_exist(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, None, Overrides(backend="env"), environ={})
    assert cfg.backend == "env" and cfg.prefix == ""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path, tmp_path / "nope.toml", Overrides(backend="env"), environ={})


def test_flags_override_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.toml", 'backend = "env"\nprefix = "/x"\ninterval = 30\n')
    cfg = load_config(tmp_path, path, Overrides(prefix="/y/", interval=5.0), environ={})
    assert cfg.prefix == "/y" and cfg.interval == 5.0 and cfg.backend == "env"


def test_dotdot_never_leaves_root(tmp_path: Path) -> None:
    path = write(tmp_path / "a.toml", 'backend = "env"\nconfdir = "../../etc/confd"\n')
    cfg = load_config(tmp_path, path, environ={})
    assert cfg.confdir == tmp_path / "etc/confd"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('backend = "env"\ninterval = "often"\n', "interval must be a number"),
        ('backend = "env"\nwatch = "yes"\n', "watch must be true or false"),
        ('backend = "env"\nbogus = 1\n', "unknown key 'bogus'"),
        ('backend = "env"\n[pitrix]\nnope = 1\n', "unknown key pitrix.nope"),
        ('backend = "env"\n[pitrix]\nheartbeat_interval = 0\n', "heartbeat_interval: must be positive"),
        ('backend = "consul"\n', "unknown backend 'consul'"),
        ('backend = "metad"\n', "nodes: the metad backend needs"),
        ('backend = "file"\n', "file: the file backend needs"),
        ("backend = \n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "a.toml", text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, path, environ={})


def test_cli_single_and_double_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        [
            "-onetime",
            "--backend",
            "file",
            "-file",
            "a.yaml",
            "-file=b.yaml",
            "-watch=false",
            "-confdir",
            "cd",
            "-config-file",
            "/dev/null",
            "--root",
            str(tmp_path / "r"),
            "-node",
            "n1",
            "-node",
            "n2",
            "-interval",
            "7",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.onetime is True and cfg.watch is False
    assert cfg.files == [tmp_path / "a.yaml", tmp_path / "b.yaml"]  # command-line paths: cwd-relative
    assert cfg.confdir == tmp_path / "cd"
    assert cfg.root == tmp_path / "r"
    assert cfg.nodes == ["n1", "n2"] and cfg.interval == 7.0


def test_cli_bad_boolean_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-watch=maybe"])
