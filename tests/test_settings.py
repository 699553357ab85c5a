"""pitrixd's settings: file, environment and defaults, with errors that name the key."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import structlog

from pitrix import logs
from pitrix.daemon import parse_args, runtime_service, settings_from
from pitrix.paths import default_state_dir
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import DEFAULT_MAX_JOBS
from pitrix.sealing import Sealer
from pitrix.settings import ConfigError, Settings, load
from pitrix.store import Store


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("PITRIX_")]:
        monkeypatch.delenv(key)


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


def test_runtime_defaults_are_the_policies_defaults(tmp_path: Path) -> None:
    """The settings' defaults are the ones the runtime's own objects document."""
    runtime = load(write(tmp_path, "")).runtime
    assert (runtime.owner_ttl, runtime.max_jobs, runtime.replica_id) == (10, DEFAULT_MAX_JOBS, None)
    assert RecoveryPolicy(**runtime.recovery.model_dump()) == RecoveryPolicy()
    assert RetryPolicy(**runtime.step_retry.model_dump()) == RetryPolicy()
    assert load(write(tmp_path, "")).stop_timeout == 10.0


RUNTIME_FILE = """stop_timeout = 20.0
[runtime]
max_jobs = 7
owner_ttl = 30
replica_id = "from-file"
[runtime.recovery]
grace = 40.0
max_down_fraction = 0.25
[runtime.step_retry]
attempts = 3
first_delay = 0.5
max_delay = 2.0
"""


def test_runtime_settings_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, RUNTIME_FILE)
    from_file = settings_from(parse_args(["--config", str(config)]))
    assert from_file.stop_timeout == 20.0
    assert (from_file.runtime.max_jobs, from_file.runtime.owner_ttl) == (7, 30)
    assert from_file.runtime.replica_id == "from-file"
    assert (from_file.runtime.recovery.grace, from_file.runtime.recovery.max_down_fraction) == (40.0, 0.25)
    assert from_file.runtime.recovery.enabled
    assert from_file.runtime.step_retry.model_dump() == {"attempts": 3, "first_delay": 0.5, "max_delay": 2.0}

    monkeypatch.setenv("PITRIX_RUNTIME__MAX_JOBS", "8")
    monkeypatch.setenv("PITRIX_RUNTIME__RECOVERY__GRACE", "50")
    monkeypatch.setenv("PITRIX_RUNTIME__RECOVERY__ENABLED", "false")
    monkeypatch.setenv("PITRIX_RUNTIME__STEP_RETRY__ATTEMPTS", "4")
    monkeypatch.setenv("PITRIX_STOP_TIMEOUT", "25")
    monkeypatch.setenv("PITRIX_LOG_LEVEL", "warning")
    from_env = settings_from(parse_args(["--config", str(config)]))
    assert (from_env.runtime.max_jobs, from_env.runtime.owner_ttl) == (8, 30)  # the file's ttl stays
    assert (from_env.runtime.recovery.grace, from_env.runtime.recovery.enabled) == (50.0, False)
    assert from_env.runtime.recovery.max_down_fraction == 0.25
    assert from_env.runtime.step_retry.model_dump() == {"attempts": 4, "first_delay": 0.5, "max_delay": 2.0}
    assert (from_env.stop_timeout, from_env.log_level) == (25.0, "warning")

    flags = [
        "--config", str(config), "--max-jobs", "9", "--owner-ttl", "3", "--replica-id", "from-flag",
        "--recovery-grace", "60", "--max-down-fraction", "0.75", "--step-attempts", "6",
        "--step-retry-delay", "0.25", "--step-retry-max-delay", "1", "--stop-timeout", "5",
        "--log-level", "debug",
    ]  # fmt: skip
    from_flags = settings_from(parse_args(flags))
    runtime = from_flags.runtime
    assert (runtime.max_jobs, runtime.owner_ttl, runtime.replica_id) == (9, 3, "from-flag")
    assert (runtime.recovery.grace, runtime.recovery.max_down_fraction) == (60.0, 0.75)
    assert runtime.recovery.enabled is False  # from the environment: no flag turns it on
    assert runtime.step_retry.model_dump() == {"attempts": 6, "first_delay": 0.25, "max_delay": 1.0}
    assert (from_flags.stop_timeout, from_flags.log_level) == (5.0, "debug")
    assert isinstance(from_flags, Settings)


def test_no_auto_recovery_flag(tmp_path: Path) -> None:
    config = str(write(tmp_path, ""))
    assert settings_from(parse_args(["--config", config])).runtime.recovery.enabled
    assert not settings_from(parse_args(["--config", config, "--no-auto-recovery"])).runtime.recovery.enabled


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[runtime]\nmax_jobs = 0\n", "runtime.max_jobs", "must be at least 1, not 0"),
        ("[runtime]\nowner_ttl = 1\n", "runtime.owner_ttl", "must be at least 2, not 1"),
        ('[runtime]\nreplica_id = "a/b"\n', "runtime.replica_id", "should match pattern"),
        ("[runtime]\nparallel = 3\n", "runtime.parallel", "Extra inputs"),
        ("[runtime.recovery]\ngrace = 0\n", "runtime.recovery.grace", "must be more than 0"),
        ("[runtime.recovery]\nmax_down_fraction = 1.5\n", "runtime.recovery.max_down_fraction", "at most 1"),
        ("[runtime.step_retry]\nattempts = 0\n", "runtime.step_retry.attempts", "must be at least 1"),
        ("[runtime.step_retry]\nfirst_delay = -1\n", "runtime.step_retry.first_delay", "at least 0"),
        (
            "[runtime.step_retry]\nfirst_delay = 2\nmax_delay = 1\n",
            "runtime.step_retry",
            "max_delay 1.0 must be at least first_delay 2.0",
        ),
        ("stop_timeout = 0\n", "stop_timeout", "must be more than 0"),
        ('[runtime]\nmax_jobs = "many"\n', "runtime.max_jobs", "valid integer"),
    ],
)
def test_bad_runtime_settings_name_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    assert f"  {key}: " in str(caught.value) and message in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--max-jobs", "0", "runtime.max_jobs: must be at least 1"),
        ("--owner-ttl", "1", "runtime.owner_ttl: must be at least 2"),
        ("--max-down-fraction", "1.5", "runtime.recovery.max_down_fraction: must be at most 1"),
        ("--recovery-grace", "-1", "runtime.recovery.grace: must be more than 0"),
        ("--step-attempts", "0", "runtime.step_retry.attempts: must be at least 1"),
        ("--stop-timeout", "0", "stop_timeout: must be more than 0"),
    ],
)
def test_bad_runtime_flags_name_the_key(tmp_path: Path, flag: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(parse_args(["--config", str(write(tmp_path, "")), flag, value]))
    assert "invalid configuration (flags)" in str(caught.value) and key in str(caught.value)


def test_bad_runtime_environment_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITRIX_RUNTIME__RECOVERY__MAX_DOWN_FRACTION", "0")
    with pytest.raises(ConfigError, match=r"runtime\.recovery\.max_down_fraction: must be more than 0"):
        load(write(tmp_path, ""))


def test_help_shows_every_runtime_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for flag, key in (
        ("--max-jobs", "runtime.max_jobs"),
        ("--owner-ttl", "runtime.owner_ttl"),
        ("--replica-id", "runtime.replica_id"),
        ("--recovery-grace", "runtime.recovery.grace"),
        ("--max-down-fraction", "runtime.recovery.max_down_fraction"),
        ("--no-auto-recovery", "runtime.recovery.enabled"),
        ("--step-attempts", "runtime.step_retry.attempts"),
        ("--step-retry-delay", "runtime.step_retry.first_delay"),
        ("--step-retry-max-delay", "runtime.step_retry.max_delay"),
        ("--stop-timeout", "stop_timeout"),
    ):
        assert flag in shown and f"[{key}" in shown, (flag, key)
    assert "PITRIX_RUNTIME__MAX_JOBS" in shown


async def test_the_runtime_is_built_from_the_settings(tmp_path: Path, store: Store) -> None:
    config = write(tmp_path, RUNTIME_FILE)
    settings = settings_from(parse_args(["--config", str(config), "--no-auto-recovery"]))
    service = runtime_service(store, settings, sealer=Sealer.generate(), replica="r1")
    assert service.supervisor.max_jobs == 7 and service.replica == "r1"
    assert service.ownership.ttl == 30
    assert service.monitor.policy == RecoveryPolicy(enabled=False, grace=40.0, max_down_fraction=0.25)
    assert service.jobs.retry == RetryPolicy(attempts=3, first_delay=0.5, max_delay=2.0)


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
