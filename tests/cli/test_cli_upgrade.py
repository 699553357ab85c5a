"""pitrix clusters upgrade: the dry run's diff as lines or JSON, and the API's refusals by field."""

from __future__ import annotations

import json

import aiohttp
from cli_helpers import ADMIN, ALICE, Run

APP = {
    "name": "demo",
    "version": "1.0",
    "roles": [{"name": "web", "count": 2, "image": "demo", "env": {"old": 1}}],
}
DEAD = {
    "name": "dead",
    "provider": "qingcloud",
    "endpoint": "http://127.0.0.1:9",
    "zone": "z1",
    "access_key_id": "AK",
    "secret_access_key": "SK",
}
NEXT = {
    **APP,
    "version": "1.1",
    "roles": [{"name": "web", "count": 2, "image": "demo-2", "env": {"port": 80}}],
    "upgrade": {"from_versions": ["1.*"], "policy": "replace"},
}


async def test_upgrade_dry_run_and_refusals(cli: Run, server: str) -> None:
    # what the CLI reads is set up over the API (a CLI process per call costs seconds here)
    async with aiohttp.ClientSession(server) as http:
        for spec in (APP, NEXT):
            async with http.post("/v1/apps", json=spec, headers={"Authorization": f"Bearer {ALICE}"}) as r:
                assert r.status == 201, await r.text()
        async with http.post("/v1/runtimes", json=DEAD, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 201, await r.text()
        body = {"runtime": "dead", "app": "demo@1.0"}
        async with http.post("/v1/clusters", json=body, headers={"Authorization": f"Bearer {ALICE}"}) as r:
            assert r.status == 202, await r.text()
            cid = (await r.json())["cluster"]["id"]

    code, out, err = await cli("clusters", "upgrade", cid, "--version", "1.1", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["demo", "1.0", "->", "1.1", "policy"] and "replace" in lines[0]
    assert "  + env.web.port = 80" in lines and "  - env.web.old" in lines
    assert "  role web image: demo -> demo-2" in lines
    code, out, err = await cli("-o", "json", "clusters", "upgrade", cid, "--version", "1.1", "--dry-run")
    assert code == 0 and json.loads(out)["params"]["removed"] == ["env.web.old"], err

    code, _, err = await cli("clusters", "upgrade", cid, "--version", "2.0", "--dry-run")
    assert code == 2 and "version: app 'demo' version '2.0' is not registered" in err, err
    code, _, err = await cli(
        "clusters", "upgrade", cid, "--version", "1.1", "--env", "web.port=x", "--no-wait"
    )
    assert code == 2 and "env.web.port: expected an integer" in err, err
