"""The demo, end to end: simulator, pitrixd, metadata VM, agents and the demo app, all real.

`pitrix demo --json` runs the whole story and checks each claim itself; the test asserts on the
account it gives (which nodes answered through the lb, the lb's rendered file, the simulator's
ledger, what was left behind). It runs once, as an unprivileged user: as the current user where
that is one already, else (the suite run as root, as CI runs it) as a user made for it. A second
run as root proved nothing more at the cost of a whole demo (~40 s): the demo gives every process
it starts an explicit state directory and has no root-only path of its own, and every component it
starts (pitrixd, the simulator, metadata VM, agents) runs as root in the other e2e tests.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PITRIX = Path(sys.executable).parent / "pitrix"
DEMO_USER = "pitrix-demo"


def run_demo(prefix: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [*prefix, str(PITRIX), "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd="/",
        check=False,
    )
    assert result.stdout.strip(), f"no account printed; stderr:\n{result.stderr[-4000:]}"
    account: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and account["ok"], f"{account.get('error')}\n{result.stderr[-4000:]}"
    return account


def upstream_ips(rendered: str) -> list[str]:
    return [line.split()[1] for line in rendered.splitlines() if line.startswith("server ")]


def check_account(account: dict[str, Any]) -> None:
    created = account["after_create"]
    assert sorted(created["answered"]) == ["web-1", "web-2"]
    assert sum(created["answered"].values()) == 24

    four = account["after_scale_4"]
    assert sorted(four["answered"]) == ["web-1", "web-2", "web-3", "web-4"]
    assert len(upstream_ips(four["rendered"])) == 4
    assert sorted(ip.rsplit(":", 1)[0] for ip in upstream_ips(four["rendered"])) == four["upstreams"]
    assert four["rendered"].startswith(f"# upstreams of {account['cluster_id']}")

    for during in (four["during"], account["after_scale_3"]["during"]):
        assert during["requests"] > 0
        assert during["failed"] == 0  # the lb reloads on SIGHUP without dropping a request

    three = account["after_scale_3"]
    assert sorted(three["answered"]) == ["web-1", "web-2", "web-3"]
    assert len(upstream_ips(three["rendered"])) == 3

    ledger = account["ledger"]
    # the metadata VM, 2 web + 1 lb, then 2 more web nodes; every one terminated at the end
    assert len(ledger) == 6
    assert {vm["status"] for vm in ledger} == {"terminated"}
    assert sum(1 for vm in ledger if vm["image"] == "pitrix-metadata") == 1

    assert account["workdir_removed"]
    assert account["steps"][-1]["leftovers"] == []
    print(f"\ndemo took {account['seconds']:.1f}s:")
    for step in account["steps"]:
        print(f"  {step['title']:<58} {step['seconds']:6.2f}s")


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(DEMO_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", DEMO_USER], check=True)
        return pwd.getpwnam(DEMO_USER)


def _let_others_reach(path: Path) -> None:
    """The unprivileged user must traverse every directory above the checkout and its venv."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def test_demo_end_to_end_as_an_unprivileged_user() -> None:
    if os.geteuid() != 0:
        # Already unprivileged: this is the case itself.
        check_account(run_demo([], dict(os.environ)))
        return
    user = _ensure_user()
    _let_others_reach(REPO)
    _let_others_reach(Path(sys.executable).resolve().parent)
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    assert runuser, "runuser (util-linux) is needed to drop privileges"
    env = {
        "PATH": f"{PITRIX.parent}:/usr/bin:/bin",
        "HOME": user.pw_dir,
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
    }
    prefix = (
        [runuser, "-u", DEMO_USER, "--"]
        if runuser.endswith("runuser")
        else [runuser, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    )
    check_account(run_demo(prefix, env))
