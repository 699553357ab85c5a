"""pitrix clusters upgrade: the dry run's diff as lines or JSON, and the API's refusals by field."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cli_helpers import ADMIN, Run

APP = {
    "name": "demo",
    "version": "1.0",
    "roles": [{"name": "web", "count": 2, "image": "demo", "env": {"old": 1}}],
}
NEXT = {
    **APP,
    "version": "1.1",
    "roles": [{"name": "web", "count": 2, "image": "demo-2", "env": {"port": 80}}],
    "upgrade": {"from_versions": ["1.*"], "policy": "replace"},
}


async def test_upgrade_dry_run_and_refusals(cli: Run, tmp_path: Path) -> None:
    for spec in (APP, NEXT):
        path = tmp_path / f"{spec['version']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        code, _, err = await cli("apps", "register", "-f", str(path))
        assert code == 0, err
    code, _, err = await cli(
        "runtimes", "add", "dead", "--provider", "qingcloud", "--endpoint", "http://127.0.0.1:9",
        "--zone", "z1", "--set", "access_key_id=AK", "--set", "secret_access_key=SK",
        env={"PITRIX_TOKEN": ADMIN},
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await cli(
        "-o", "json", "clusters", "create", "--runtime", "dead", "--app", "demo@1.0", "--no-wait"
    )
    assert code == 0, err
    cid = json.loads(out)["cluster_id"]

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
    code, _, err = await cli("clusters", "upgrade", cid, "--version", "1.0", "--no-wait")
    assert code == 2 and "is on demo 1.0 already" in err, err
    code, _, err = await cli(
        "clusters", "upgrade", cid, "--version", "1.1", "--env", "web.port=x", "--no-wait"
    )
    assert code == 2 and "env.web.port: expected an integer" in err, err
