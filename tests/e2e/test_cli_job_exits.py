"""The CLI's exit status follows the job it waited for, for every action.

The real ``pitrix`` executable against a real pitrixd process and the simulator: each action it
waits for exits 0 when its job succeeded and 1 when the job failed, with the failed step and the
reason on stderr, whatever state the job left the cluster in (a rolled-back update-env leaves it
``active``; a failed create leaves it ``failed``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_cloud import demo_app
from e2e_daemons import Pitrixd, add_runtime, start_simulator

from pitrix.cli.client import ApiClient
from pitrix.cli.demo import Child, stop_child

pytestmark = pytest.mark.e2e

PITRIX = str(Path(sys.executable).parent / "pitrix")
DEADLINE = 180.0  # one action on the simulator, on a loaded machine


class Cli:
    def __init__(self, url: str, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "cli.toml"
        self.config.write_text(f'url = "{url}"\n')

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        """``pitrix ARGS`` with a config naming the pitrixd: (exit code, stdout, stderr)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
        env["PITRIX_CONFIG"] = str(self.config)
        process = await asyncio.create_subprocess_exec(
            PITRIX, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    def spec(self, name: str, app: dict[str, Any]) -> str:
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(app))
        return str(path)


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Cli]:
    """A pitrixd (open API, no auto-recovery to start jobs of its own) with the simulator as ``sim``."""
    sim: Child = await start_simulator(tmp_path)
    daemon = Pitrixd(tmp_path)
    try:
        await daemon.start("--no-auto-recovery")
        async with ApiClient(daemon.url) as api:
            await add_runtime(api, sim)
        yield Cli(daemon.url, tmp_path)
    finally:
        await daemon.stop()
        await stop_child(sim)


def failed(code: int, err: str, action: str, step: str, reason: str, state: str) -> None:
    """Exit 1 and one stderr line naming the action, the failed step, the reason and the cluster's state."""
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("pitrix: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith(f"pitrix: {action} failed at step {step}: "), line
    assert reason in line and line.endswith(f" is {state})"), line


async def state_of(cli: Cli, cid: str) -> str:
    code, out, err = await cli("-o", "json", "clusters", "show", cid)
    assert code == 0, err
    return str(json.loads(out)["state"])


async def test_every_action_exits_by_its_jobs_outcome(cli: Cli) -> None:
    app = cli.spec("demo", demo_app())
    code, out, err = await cli(
        "clusters", "create", "-f", app, "--runtime", "sim", "--count", "web=1", "--count", "lb=0"
    )
    assert code == 0, (out, err)
    cid = out.split(":")[0]
    assert out.rstrip().endswith(f"{cid}: active"), out

    code, out, err = await cli("clusters", "update-env", cid, "--role", "web", "--set", "greeting=bonjour")
    assert code == 0 and err == "", (out, err)
    # A value the spec allows but the node's own check refuses: the canary fails and is put back.
    # The cluster is active again, yet the action failed: the exit status says so.
    code, out, err = await cli("clusters", "update-env", cid, "--role", "web", "--set", "greeting=<b>hi</b>")
    failed(code, err, "update_env", "canary", "previous values restored", "active")
    assert out.splitlines()[-1].startswith(f"{cid}: active (") and "values restored" in out, out
    assert await state_of(cli, cid) == "active"
    # In JSON too: stdout is the cluster, stderr the job's failure.
    code, out, err = await cli(
        "-o", "json", "clusters", "update-env", cid, "--role", "web", "--set", "greeting=<i>"
    )
    failed(code, err, "update_env", "canary", "web-1", "active")
    assert json.loads(out)["state"] == "active"

    for action in (
        ("scale", cid, "web", "2"),
        ("stop", cid),
        ("start", cid),
        ("recover", cid, "--node", "web-2"),
    ):
        code, out, err = await cli("clusters", *action)
        assert code == 0 and err == "", (action, out, err)
    code, out, err = await cli("clusters", "delete", cid)
    assert code == 0 and out.rstrip().endswith(f"{cid}: deleted"), (out, err)

    # A create whose services do not start fails the cluster; so does its retry.
    broken = demo_app(name="broken")
    broken["roles"][0]["services"]["start"] = {
        "cmd": "sh -c 'echo no port for you >&2; exit 3'",
        "timeout": 30,
    }
    code, out, err = await cli(
        "clusters",
        "create",
        "-f",
        cli.spec("broken", broken),
        "--runtime",
        "sim",
        "--count",
        "web=1",
        "--count",
        "lb=0",
    )
    failed(code, err, "create", "start:web", "exit 3: no port for you", "failed")
    cid = out.split(":")[0]
    code, out, err = await cli("clusters", "retry", cid)
    failed(code, err, "create", "start:web", "exit 3: no port for you", "failed")
    code, out, err = await cli("clusters", "delete", cid)
    assert code == 0, (out, err)
