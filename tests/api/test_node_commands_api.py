"""``GET .../nodes/{node}/logs`` and ``POST .../nodes/{node}/exec`` without VMs: every refusal names
its field or says why, the owner's (or an admin's) clusters only, an active cluster only, and the
request as it reaches a node. (Run on real agents: tests/e2e/test_custom_services.py.)"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, bearer, error_of, put_data_cluster

from pitrix.api.openapi import openapi_document
from pitrix.cli.main import build_parser
from pitrix.runtime.node_commands import exec_request, logs_request
from pitrix.store import Store

Client = TestClient[Any, Any]
APP = {"name": "kv", "version": "1.0", "roles": [{"name": "data", "count": 2, "image": "kv"}]}


async def test_bad_requests_name_their_field(api: Client, store: Store) -> None:
    await put_data_cluster(store, "cl-nod1", APP, node_status="registered")
    base = "/v1/clusters/cl-nod1/nodes/data-1"
    for query, field in (
        ("lines=0", "lines"),
        ("lines=ten", "lines"),
        ("lines=10001", "lines"),
        ("file=var/log/x", "file"),
        ("file=/var/../etc/shadow", "file"),
        ("color=1", "color"),
    ):
        error = await error_of(await api.get(f"{base}/logs?{query}", headers=bearer(ALICE)), 400)
        assert error["field"] == field, (query, error)
    for body, field in (
        ({}, "command"),
        ({"command": []}, "command"),
        ({"command": ["ls", 3]}, "command"),
        ({"command": "  "}, "command"),
        ({"command": "x" * 9000}, "command"),
        ({"command": ["true"], "timeout": 0}, "timeout"),
        ({"command": ["true"], "timeout": 601}, "timeout"),
        ({"command": ["true"], "timeout": True}, "timeout"),
        ({"command": ["true"], "user": "root"}, "user"),
    ):
        error = await error_of(await api.post(f"{base}/exec", json=body, headers=bearer(ALICE)), 400)
        assert error["field"] == field, (body, error)
    for query, field in (
        ("term=", "term"),
        ("term=x%20y", "term"),
        ("term=xterm&cols=0", "cols"),
        ("rows=9", "rows"),
    ):
        error = await error_of(await api.get(f"{base}/ssh?{query}", headers=bearer(ALICE)), 400)
        assert error["field"] == field, (query, error)
    error = await error_of(
        await api.post(
            f"{base}/exec", data=b"[1]", headers={**bearer(ALICE), "Content-Type": "application/json"}
        ),
        400,
    )
    assert error["field"] == "body"


async def test_only_the_owner_or_an_admin_and_only_while_active(api: Client, store: Store) -> None:
    await put_data_cluster(store, "cl-nod2", APP, node_status="registered")
    base = "/v1/clusters/cl-nod2/nodes"
    run = {"command": ["uptime"]}
    await error_of(await api.post(f"{base}/data-1/exec", json=run, headers=bearer(BOB)), 404)  # not Bob's
    await error_of(await api.get(f"{base}/data-1/logs", headers=bearer(BOB)), 404)
    await error_of(await api.get(f"{base}/data-1/ssh", headers=bearer(BOB)), 404)
    error = await error_of(await api.get(f"{base}/data-9/ssh", headers=bearer(ALICE)), 404)
    assert error["message"] == "node: cluster cl-nod2 has no node 'data-9' (has data-1, data-2)"
    error = await error_of(await api.post(f"{base}/data-9/exec", json=run, headers=bearer(ALICE)), 404)
    assert error["message"] == "node: cluster cl-nod2 has no node 'data-9' (has data-1, data-2)"
    # active, but its metadata service was never made (the dead cloud): a conflict, said so
    for token in (ALICE, ADMIN):
        error = await error_of(await api.post(f"{base}/data-1/exec", json=run, headers=bearer(token)), 409)
        assert error["message"] == "node: cluster cl-nod2 has no running metadata service"
    await put_data_cluster(store, "cl-nod3", APP, node_status="registered", state="stopped")
    error = await error_of(
        await api.get("/v1/clusters/cl-nod3/nodes/data-1/logs", headers=bearer(ALICE)), 409
    )
    assert (
        error["message"] == "node: cluster cl-nod3 is stopped; commands run on its nodes while it is active"
    )
    error = await error_of(await api.get("/v1/clusters/cl-nod3/nodes/data-1/ssh", headers=bearer(ALICE)), 409)
    assert (
        error["message"] == "node: cluster cl-nod3 is stopped; a shell opens on its nodes while it is active"
    )
    paths = openapi_document()["paths"]
    assert paths["/v1/clusters/{cid}/nodes/{node}/ssh"]["get"]["operationId"] == "openNodeShell"
    assert paths["/v1/clusters/{cid}/nodes/{node}/exec"]["post"]["operationId"] == "execOnNode"
    assert paths["/v1/clusters/{cid}/nodes/{node}/logs"]["get"]["tags"] == ["nodes"]


def test_what_reaches_the_node() -> None:
    logs = logs_request({"lines": "5", "file": "/var/log/it's here.log"})
    assert logs.timeout > 0 and logs.shown == "/var/log/it's here.log"
    assert logs.cmd.startswith("""f="${PITRIX_VM_ROOT:-}"'/var/log/it'"'"'s here.log'; """)
    assert logs.cmd.endswith('tail -n 5 "$f"')
    assert logs_request({}).shown == "/var/log/pitrix-agent.log"
    # an argument list is quoted word by word; a string stays shell text
    assert exec_request({"command": ["echo", "a b", "$HOME"]}).cmd == "echo 'a b' '$HOME'"
    assert exec_request({"command": "echo $HOME | wc -c", "timeout": 5}).timeout == 5.0


def test_the_cli_keeps_the_command_after_the_double_dash() -> None:
    parse = build_parser().parse_args
    args = parse(["nodes", "exec", "--timeout", "5", "web", "web-1", "--", "sh", "-c", "ls -o", "-o", "json"])
    assert (args.cluster, args.node, args.timeout, args.output) == ("web", "web-1", 5.0, None)
    assert args.argv == ["sh", "-c", "ls -o", "-o", "json"]  # the node's, not ours
    args = parse(["nodes", "logs", "web", "web-2", "-n", "7", "--file", "/var/log/app.log", "-o", "json"])
    assert (args.lines, args.file, args.output) == (7, "/var/log/app.log", "json")
