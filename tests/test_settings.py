"""pitrixd's settings: file, environment and defaults, with errors that name the key."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from pitrix import logs
from pitrix.daemon import RuntimeOptions, parse_args, settings_from
from pitrix.paths import default_state_dir
from pitrix.runtime.service import DEFAULT_MAX_JOBS
from pitrix.settings import ConfigError, load


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "PITRIX_STATE_DIR",
        "PITRIX_API__LISTEN",
        "PITRIX_LOG_LEVEL",
        "PITRIX_ETCD__ENDPOINTS",
        "PITRIX_ETCD__CA_FILE",
        "PITRIX_ETCD__CERT_FILE",
        "PITRIX_ETCD__KEY_FILE",
    ):
        monkeypatch.delenv(key, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pitrixd.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ""))
    assert settings.api.listen == "127.0.0.1:9610"
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 9610)
    assert settings.etcd.endpoints == []
    assert settings.etcd.prefix == "/pitrix"
    assert settings.log_level == "info"


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log_level = "DEBUG"\n[api]\nlisten = "127.0.0.2:9700"\n[etcd]\nendpoints = ["http://127.0.0.1:2379"]\n',
    )
    settings = load(path)
    assert settings.log_level == "debug"
    assert settings.api.port == 9700
    assert settings.etcd.endpoints == ["http://127.0.0.1:2379"]


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITRIX_API__LISTEN", "127.0.0.3:9800")
    monkeypatch.setenv("PITRIX_ETCD__ENDPOINTS", '["http://127.0.0.1:1"]')
    settings = load(write(tmp_path, '[api]\nlisten = "127.0.0.2:9700"\n'))
    assert settings.api.listen == "127.0.0.3:9800"
    assert settings.etcd.endpoints == ["http://127.0.0.1:1"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[api]\nlisten = "nowhere"\n', "api.listen"),
        ('[api]\nlisten = "127.0.0.1:99999"\n', "api.listen"),
        ('log_level = "chatty"\n', "log_level"),
        ('[etcd]\nprefix = "pitrix/"\n', "etcd.prefix"),
        ("[etcd]\ndial_timeout = -1\n", "etcd.dial_timeout"),
        ('[api]\ncolour = "red"\n', "api.colour"),
        ('colour = "red"\n', "colour"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    assert f"  {key}: " in str(caught.value), str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_plain_metadata_clusters_are_refused_with_the_reason(tmp_path: Path) -> None:
    """metad's legacy mode opens its management API to instances: pitrixd no longer makes one."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "metadata_tls = false\n"))
    assert "  metadata_tls: " in str(caught.value)
    assert "management API" in str(caught.value) and "--legacy-source-ip" in str(caught.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[api\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml")


def test_daemon_flags_override(tmp_path: Path) -> None:
    args = parse_args(
        [
            "--config",
            str(write(tmp_path, "")),
            "--api-listen",
            "127.0.0.1:0",
            "--etcd",
            "http://127.0.0.1:2379",
            "--state-dir",
            str(tmp_path),
        ]
    )
    settings = settings_from(args)
    assert settings.api.port == 0
    assert settings.etcd.endpoints == ["http://127.0.0.1:2379"]
    assert settings.state_dir == tmp_path


def test_state_dir_follows_the_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/pitrix")
    assert default_state_dir("etcd") == Path("/var/lib/pitrix/etcd")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "pitrix"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "pitrix"
    monkeypatch.setenv("PITRIX_STATE_DIR", str(tmp_path / "x"))
    assert default_state_dir("sim") == tmp_path / "x" / "sim"


def test_logs_are_json_off_a_terminal() -> None:
    out = io.StringIO()
    try:
        logs.configure("info", stream=out)
        logs.get_logger("t", cluster_id="cl-1").info("hello", step="run")
        logs.get_logger("t").debug("hidden")
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "hello"
    assert record["cluster_id"] == "cl-1" and record["step"] == "run"
    with pytest.raises(ValueError, match="unknown level"):
        logs.configure("chatty", stream=out)


def test_runtime_flags_are_checked() -> None:
    options = RuntimeOptions.from_args(parse_args(["--max-jobs", "7"]))
    assert options.max_jobs == 7
    assert RuntimeOptions.from_args(parse_args([])).max_jobs == DEFAULT_MAX_JOBS
    for flag, value in (("--max-jobs", "0"), ("--owner-ttl", "1"), ("--max-down-fraction", "1.5")):
        with pytest.raises(ConfigError, match=flag.lstrip("-")):
            RuntimeOptions.from_args(parse_args([flag, value]))


def test_external_etcd_tls_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ca.pem", "c.crt", "c.key"):
        (tmp_path / name).write_text("x")
    monkeypatch.setenv("PITRIX_ETCD__ENDPOINTS", '["https://10.0.0.5:2379"]')
    monkeypatch.setenv("PITRIX_ETCD__CA_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("PITRIX_ETCD__CERT_FILE", str(tmp_path / "c.crt"))
    monkeypatch.setenv("PITRIX_ETCD__KEY_FILE", str(tmp_path / "c.key"))
    tls = load(write(tmp_path, "")).etcd.tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        tmp_path / "ca.pem",
        tmp_path / "c.crt",
        tmp_path / "c.key",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[etcd]\nendpoints = ["https://127.0.0.1:2379"]\n', "is https://: set ca_file"),
        ('[etcd]\nendpoints = ["http://127.0.0.1:2379"]\nca_file = "CA"\n', "is plain http://"),
        ('[etcd]\nendpoints = ["https://127.0.0.1:2379"]\nca_file = "CA"\ncert_file = "CA"\n', "go together"),
        (
            '[etcd]\nendpoints = ["https://127.0.0.1:2379"]\nca_file = "/nonexistent/ca.pem"\n',
            "ca_file: /nonexist",
        ),
    ],
)
def test_bad_etcd_tls_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"etcd") as caught:
        load(write(tmp_path, text.replace('"CA"', f'"{tmp_path / "ca.pem"}"')))
    assert message in str(caught.value)


def test_an_https_etcd_flag_without_tls_settings_is_a_config_error(tmp_path: Path) -> None:
    args = parse_args(["--config", str(write(tmp_path, "")), "--etcd", "https://127.0.0.1:2379"])
    with pytest.raises(ConfigError, match="is https://: set ca_file"):
        settings_from(args)


def test_etcd_tls_settings_come_with_an_etcd_flag_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.setenv("PITRIX_ETCD__CA_FILE", str(tmp_path / "ca.pem"))
    config = str(write(tmp_path, ""))
    with_flag = settings_from(parse_args(["--config", config, "--etcd", "https://127.0.0.1:2379"]))
    assert with_flag.etcd.tls is not None and with_flag.etcd.endpoints == ["https://127.0.0.1:2379"]
    with pytest.raises(ConfigError, match="the embedded etcd makes its own"):
        settings_from(parse_args(["--config", config]))
