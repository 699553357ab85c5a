"""``pitrix replicas``: the live replicas as the answering one sees them (admins only)."""

from __future__ import annotations

import json

from cli_helpers import ADMIN, Run


async def test_replicas_lists_the_answering_replica_marked(cli: Run) -> None:
    code, out, err = await cli("replicas", env={"PITRIX_TOKEN": ADMIN})
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["REPLICA", "ADDRESS", "CLUSTERS"]
    assert row.split()[1] == "*" and row.split()[3:5] == ["0", "0"]
    code, out, err = await cli("-o", "json", "replicas", env={"PITRIX_TOKEN": ADMIN})
    assert code == 0, err
    body = json.loads(out)
    assert [r["id"] for r in body["replicas"]] == [body["replica"]]
    code, _out, err = await cli("replicas")  # the config's token is not an admin's
    assert code != 0 and "admin" in err, err
