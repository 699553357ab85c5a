"""pitrix as scripts use it: config file and environment, exit codes, JSON output, events."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
import yaml
from cli_helpers import ADMIN, ALICE, PITRIX, Run

from pitrix.cli.config import DEFAULT_URL, CliConfigError, load_config

APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


def test_config_precedence(tmp_path: Path) -> None:
    path = tmp_path / "cli.toml"
    path.write_text('url = "http://127.0.0.1:1"\ntoken = "from-file"\noutput = "json"\n')
    env = {"PITRIX_CONFIG": str(path)}
    assert load_config(env).token == "from-file" and load_config(env).output == "json"
    overridden = load_config({**env, "PITRIX_TOKEN": "from-env", "PITRIX_URL": "unix:/run/p.sock"})
    assert (overridden.token, overridden.url) == ("from-env", "unix:/run/p.sock")
    xdg = load_config({"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert (xdg.url, xdg.token, xdg.output) == (DEFAULT_URL, None, "table")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('url = "x"\npassword = "y"\n', "password: unknown key"),
        ("url = 3\n", "url: must be a string"),
        ('output = "xml"\n', "output: must be"),
        ("url = \n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cli.toml"
    path.write_text(text)
    with pytest.raises(CliConfigError, match=message):
        load_config({"PITRIX_CONFIG": str(path)})


async def test_exit_codes(cli: Run, server: str) -> None:
    code, _, err = await cli("clusters", "show", "cl-nothere")
    assert code == 4 and "does not exist" in err
    code, _, err = await cli("clusters", "list", env={"PITRIX_TOKEN": "not-a-known-token-at-all"})
    assert code == 6 and "unknown token" in err
    code, _, err = await cli("runtimes", "add", "x", "--provider", "qingcloud")  # not an admin
    assert code == 6
    code, _, err = await cli("--url", "http://127.0.0.1:9", "clusters", "list")
    assert code == 3 and "cannot reach" in err
    code, _, err = await cli("clusters", "list", env={"PITRIX_CONFIG": "/nonexistent/cli.toml"})
    assert code == 2 and "does not exist" in err
    code, _, err = await cli("clusters", "create", "--runtime", "dead", "--app", "demo")
    assert code == 4 and "not registered" in err


async def test_apps_clusters_and_events(cli: Run, tmp_path: Path, server: str) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text(yaml.safe_dump(APP))
    code, out, err = await cli("-o", "json", "apps", "register", "-f", str(spec))
    assert code == 0, err
    assert json.loads(out)["owner"] == "alice"
    code, out, _ = await cli("apps", "list")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["demo", "1.0", "alice"]
    code, out, _ = await cli("-o", "json", "apps", "show", "demo")
    assert json.loads(out)["versions"] == ["1.0"]

    admin = {"PITRIX_TOKEN": ADMIN}
    code, _, err = await cli(
        "runtimes", "add", "dead", "--no-check", "--provider", "qingcloud", "--endpoint", "http://127.0.0.1:9",
        "--zone", "z1", "--set", "access_key_id=AK", "--set", "secret_access_key=SK",
        "--heartbeat-interval", "10", env=admin,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await cli("-o", "json", "runtimes", "list", env=admin)
    assert code == 0, err
    assert [r["heartbeat_interval"] for r in json.loads(out)["runtimes"]] == [10.0]
    code, out, err = await cli(
        "-o", "json", "clusters", "create", "--runtime", "dead", "--app", "demo@1.0", "--no-wait"
    )
    assert code == 0, err
    cid = json.loads(out)["cluster_id"]

    # Follow every cluster; once the first one's snapshot line is out the follower is subscribed,
    # so the second cluster's whole story must arrive, until the dead cloud fails its create.
    follower = await asyncio.create_subprocess_exec(
        PITRIX, "clusters", "events", "--follow", stdout=asyncio.subprocess.PIPE, env=_env_of(tmp_path),
    )  # fmt: skip
    assert follower.stdout is not None
    lines: list[str] = []
    try:
        first = (await asyncio.wait_for(follower.stdout.readline(), 60)).decode()
        assert re.match(rf"\d\d:\d\d:\d\d  {cid}  cluster", first), first  # the time, then the cluster
        code, out, err = await cli(
            "-o", "json", "clusters", "create", "--runtime", "dead", "--app", "demo", "--no-wait"
        )  # fmt: skip
        assert code == 0, err
        second = json.loads(out)["cluster_id"]
        while not any(line.split()[:3] == [second, "cluster", "failed"] for line in lines):
            raw = await asyncio.wait_for(follower.stdout.readline(), 60)
            assert raw, f"events ended early: {lines}"
            lines.append(raw.decode().strip()[len("HH:MM:SS  ") :])
    finally:
        follower.terminate()
        await follower.wait()
    story = [line for line in lines if line.startswith(second)]
    assert story[0] == f"{second}  cluster  creating", story
    assert any(line.startswith(f"{second}  step     metadata failed") for line in story), story

    # Without --follow: the current state, then exit.
    await _until_failed(server, cid)
    code, out, _ = await cli("clusters", "events")
    assert code == 0 and f"{cid}  cluster  failed" in out
    # A cluster's kept events: its whole story with pitrixd's times, oldest first; -n the last ones.
    code, out, _ = await cli("-o", "json", "clusters", "events", cid)
    kept = [json.loads(line) for line in out.splitlines()]
    states = [e["cluster"]["state"] for e in kept if e["event"] == "cluster"]
    assert code == 0 and states[0] == "creating" and states[-1] == "failed", states
    assert all(e["time"].endswith("Z") for e in kept)
    code, out, _ = await cli("clusters", "events", cid, "-n", "2", "--since", "1h")
    assert code == 0 and len(out.splitlines()) == 2 and all(cid in line for line in out.splitlines())
    code, _, err = await cli("clusters", "events", "-n", "2")
    assert code == 2 and "need a CLUSTER" in err, err
    code, _, err = await cli("clusters", "events", cid, "--since", "soon")
    assert code == 2 and "since:" in err, err

    # A failed cluster cannot be stopped (5); retry runs again and fails again (1).
    code, _, err = await cli("clusters", "stop", cid)
    assert code == 5 and "stop" in err
    # -f with a cluster: its last kept event, then the retry's events as they come
    tail = await asyncio.create_subprocess_exec(
        PITRIX, "clusters", "events", cid, "-n", "1", "-f",
        stdout=asyncio.subprocess.PIPE, env=_env_of(tmp_path),
    )  # fmt: skip
    assert tail.stdout is not None
    try:
        kept_line = (await asyncio.wait_for(tail.stdout.readline(), 60)).decode()
        assert cid in kept_line, kept_line
        code, out, err = await cli("clusters", "retry", cid)
        assert code == 1 and "FAILED" in out and f"{cid}: failed" in out, (out, err)
        followed: list[str] = []
        # the retry's steps, then the cluster failed again
        while not (followed and "  step " in "".join(followed) and f"{cid}  cluster  failed" in followed[-1]):
            raw = await asyncio.wait_for(tail.stdout.readline(), 60)
            assert raw, f"events -f ended early: {followed}"
            followed.append(raw.decode())
    finally:
        tail.terminate()
        await tail.wait()
    code, _, err = await cli("clusters", "update-env", cid, "--role", "web", "--set", "x=1")
    assert code in (2, 5), err
    # Any action by its verb: judged by the action (400 naming the field: 2), the lifecycle (5).
    code, _, err = await cli("clusters", "act", cid, "scale", "--body", '{"role": "web", "count": -1}')
    assert code == 2 and "count: must be a whole number" in err, err
    code, _, err = await cli("clusters", "act", cid, "stop")
    assert code == 5 and "cannot stop a cluster that is failed" in err, err
    code, _, err = await cli("clusters", "act", cid, "scale", "--body", "[1]")
    assert code == 2 and "must be a JSON object" in err, err
    # restart's body from its flags, judged by the action (this app's web role has no services)
    code, _, err = await cli("clusters", "restart", cid, "--role", "web", "--no-wait")
    assert code == 2 and "roles.0: role web has no restart service" in err, err
    # resize's body from its flags, judged by the action (the field out of bounds named)
    code, _, err = await cli("clusters", "resize", cid, "--role", "web", "--cpu", "999", "--no-wait")
    assert code == 2 and "roles.web.cpu: 999 is outside the role's bounds [1, 128]" in err, err
    code, _, err = await cli("clusters", "resize", cid, "--role", "web")
    assert code == 2 and "resize needs one of --cpu" in err, err
    # Scale in chosen nodes: the ids reach the API, which names the field it refuses (2).
    code, _, err = await cli("clusters", "scale", cid, "--role", "web", "--nodes", "web-2, web-9")
    assert code == 2 and "nodes: role web has no node 'web-2', 'web-9'" in err, err
    code, _, err = await cli("clusters", "scale", cid, "--role", "web")
    assert code == 2 and "scale needs a count (TO or --count) or --nodes" in err, err


def _env_of(tmp_path: Path) -> dict[str, str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    environ["PITRIX_CONFIG"] = str(tmp_path / "cli.toml")
    return environ


async def _until_failed(server: str, cid: str) -> None:
    """Until the cluster's create job has ended (the API's wait holds until then)."""
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with (
        aiohttp.ClientSession(server, headers=headers) as http,
        http.get(f"/v1/clusters/{cid}/wait", params={"timeout": "60"}) as response,
    ):
        assert response.status == 200
        assert (await response.json())["state"] == "failed"


async def test_apps_publish_is_for_admins_and_reaches_every_owner(cli: Run, tmp_path: Path) -> None:
    spec = tmp_path / "shared.yaml"
    spec.write_text(yaml.safe_dump({**APP, "name": "shared"}))
    code, _, err = await cli("apps", "register", "--publish", "-f", str(spec))
    assert code == 6, err  # alice is no admin
    code, out, err = await cli("apps", "register", "--publish", "-f", str(spec), env={"PITRIX_TOKEN": ADMIN})
    assert code == 0 and "published" in out, err
    code, out, _ = await cli("apps", "list")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["shared", "1.0", "ops", "published"]
    code, out, _ = await cli("apps", "show", "shared")
    assert code == 0 and "published by ops" in out
