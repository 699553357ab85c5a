"""scripts/install into a scratch root: users, directories, a virtualenv with pitrix from a wheel,
and units that systemd-analyze verifies (ExecStart really exists) and rates as hardened."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("pitrixd.service", "pitrix-metad.service", "pitrix-agent.service")
# systemd-analyze security's "overall exposure" (0 = locked down, 10 = none): measured 1.7, 1.7
# and 6.9 (the agent runs as root to write the app's files and restart its services).
MOST_EXPOSED = {"pitrixd.service": 2.0, "pitrix-metad.service": 2.0, "pitrix-agent.service": 7.0}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("systemd-sysusers") is None or shutil.which("systemd-analyze") is None,
    reason="needs root (files owned by the new users) and systemd's tools (scripts/system-deps.sh)",
)


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, check=check)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this tree, built from a copy (a build writes build/ and egg-info beside it)."""
    source = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pitrix", "simulator", "schemas", "docs"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source)
    return next(out.glob("pitrix-*.whl"))


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    # Only pitrix itself: its dependencies are not what is tested and would need the network.
    return run(REPO / "scripts/install", "--root", root, "--python", sys.executable, "--wheel", wheel,
               "--pip-args", "--no-deps --no-index --no-cache-dir")  # fmt: skip


def test_install_makes_users_dirs_venv_and_units_that_verify(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    # systemd-analyze --root looks for the targets the units name in the tree: the system's own.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    done = install(root, wheel)
    assert "install: done" in done.stdout, done

    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert {"pitrix", "pitrix-metad"} <= users.keys()
    assert users["pitrix"][5] == "/var/lib/pitrix" and users["pitrix"][6].endswith("nologin")
    state = (root / "var/lib/pitrix").stat()
    assert state.st_uid == int(users["pitrix"][2]) and state.st_mode & 0o777 == 0o700
    assert (root / "var/lib/pitrix-metad").stat().st_uid == int(users["pitrix-metad"][2])
    for path in ("etc/pitrix", "etc/confd/conf.d", "etc/confd/templates"):
        assert (root / path).is_dir(), path
    for command in ("pitrixd", "pitrix-metad", "pitrix-agent", "pitrix"):
        assert os.access(root / "opt/pitrix/bin" / command, os.X_OK), command
    assert (root / "opt/pitrix/share/pitrix/openapi.yaml").read_text() == (
        REPO / "schemas/openapi.yaml"
    ).read_text()  # /openapi.json outside a checkout
    assert (root / "opt/pitrix/share/doc/pitrix/config.md").is_file()  # pitrixd.service's Documentation=
    assert "METAD_ARGS=" in (root / "etc/pitrix/metad.env").read_text()

    verify = run("systemd-analyze", "verify", f"--root={root}", *UNITS, check=False)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify
    agent = root / "opt/pitrix/bin/pitrix-agent"
    agent.chmod(0o644)  # the check is real: an ExecStart that cannot run fails it
    verify = run("systemd-analyze", "verify", f"--root={root}", "pitrix-agent.service", check=False)
    assert verify.returncode != 0 and "pitrix-agent" in verify.stderr
    agent.chmod(0o755)

    for unit in UNITS:
        text = (root / "etc/systemd/system" / unit).read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text, unit
        result = run("systemd-analyze", "security", "--offline=yes", f"--root={root}", unit, check=False)
        found = re.search(rf"Overall exposure level for {unit}: ([\d.]+)", result.stdout + result.stderr)
        assert found is not None, result
        assert float(found[1]) <= MOST_EXPOSED[unit], (unit, found[1])

    # Again, as an upgrade: the operator's config stays.
    (root / "etc/pitrix/metad.env").write_text("METAD_ARGS=--listen-ip 10.0.0.2 --embedded-etcd\n")
    assert "install: done" in install(root, wheel).stdout
    assert "10.0.0.2" in (root / "etc/pitrix/metad.env").read_text()


def test_install_refuses_bad_arguments_with_a_clear_message(tmp_path: Path) -> None:
    for argv, says in (
        (["--prefix", "opt/pitrix"], "--prefix: must be an absolute path"),
        (["--root", str(tmp_path / "nowhere")], "is not a directory"),
        (["--wheel", str(tmp_path / "none.whl")], "--wheel: no such file"),
        (["--frobnicate"], "unknown argument: --frobnicate"),
    ):
        result = run(REPO / "scripts/install", *argv, check=False)
        assert result.returncode == 2 and says in result.stderr, (argv, result)
