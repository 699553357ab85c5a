"""``clusters create --env [ROLE.]KEY=VALUE -p params.yaml`` and ``clusters delete --force``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cli_helpers import ADMIN, ALICE, Run

SECRET = "file-only-Pw-9e2d"
APP = {
    "name": "shop",
    "version": "1.0",
    "env": {"admin_password": {"type": "password", "required": True}, "region": "eu"},
    "roles": [
        {
            "name": "web",
            "count": 1,
            "image": "demo",
            "env": {"port": {"type": "integer", "max": 65535, "default": 80}, "a.b": "x"},
        }
    ],
}


async def api_get(server: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession(server, headers={"Authorization": f"Bearer {ALICE}"}) as http,
        http.get(path) as response,
    ):
        assert response.status == 200
        return await response.json()


async def test_create_takes_env_flags_over_a_params_file_and_delete_takes_force(
    cli: Run, tmp_path: Path, server: str
) -> None:
    code, _, err = await cli(
        "runtimes", "add", "dead", "--no-check", "--provider", "qingcloud", "--endpoint", "http://127.0.0.1:9",
        "--zone", "z1", "--set", "access_key_id=AK", "--set", "secret_access_key=SK",
        env={"PITRIX_TOKEN": ADMIN},
    )  # fmt: skip
    assert code == 0, err
    spec, params = tmp_path / "app.yaml", tmp_path / "params.yaml"
    spec.write_text(yaml.safe_dump(APP))
    params.write_text(yaml.safe_dump({"admin_password": SECRET, "region": "us", "web": {"port": 81}}))

    code, _, err = await cli(
        "clusters", "create", "--runtime", "dead", "-f", str(spec), "-p", str(params),
        "--env", "web.port=70000",
    )  # fmt: skip
    assert code == 2 and "env.web.port: 70000 is above the maximum 65535" in err, err

    code, out, err = await cli(
        "-o", "json", "clusters", "create", "--runtime", "dead", "-f", str(spec), "-p", str(params),
        "--env", "web.port=8080", "--env", "web.a.b=y", "--no-wait",
    )  # fmt: skip
    assert code == 0, err
    assert SECRET not in out + err
    cid = json.loads(out)["cluster_id"]
    shown = await api_get(server, f"/v1/clusters/{cid}")
    assert shown["env"] == {"admin_password": "******", "region": "us", "web": {"port": "8080", "a.b": "y"}}
    code, out, err = await cli("-o", "json", "clusters", "show", cid)
    assert code == 0 and SECRET not in out + err

    await api_get(server, f"/v1/clusters/{cid}/wait?timeout=60")  # until the dead cloud fails it
    code, out, err = await cli("-o", "json", "clusters", "delete", cid, "--force", "--no-wait")
    assert code == 0, err
    jobs = await api_get(server, f"/v1/clusters/{cid}/jobs")
    deletes = [j for j in jobs["jobs"] if j["action"] == "delete"]
    assert [j["args"] for j in deletes] == [{"force": True, "was": "failed"}]


async def test_a_bad_params_file_is_a_usage_error(cli: Run, tmp_path: Path) -> None:
    spec, params = tmp_path / "app.yaml", tmp_path / "params.yaml"
    spec.write_text(yaml.safe_dump(APP))
    params.write_text("- just\n- a list\n")
    code, _, err = await cli("clusters", "create", "--runtime", "dead", "-f", str(spec), "-p", str(params))
    assert code == 2 and "-p:" in err and "must be a mapping" in err, err
    code, _, err = await cli("clusters", "create", "--runtime", "dead", "-f", str(spec), "--env", "novalue")
    assert code == 2 and "--env takes [ROLE.]KEY=VALUE" in err, err
