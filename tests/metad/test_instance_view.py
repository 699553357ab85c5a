"""The /self projection, formats, identity and status write-back of the instance API."""

from __future__ import annotations

import asyncio
import json

import yaml

from pitrix.metad.server import Metad
from pitrix.store import Store, WatchBatch


async def test_self_projection_is_scoped_to_the_caller(seed, instances, net) -> None:
    await seed()
    status, view, _ = await instances.get(net.ip(1), "/self")
    assert status == 200
    assert view["host"]["instance_id"] == "i-web1"
    assert view["host"]["ip"] == net.ip(1)
    assert set(view["hosts"]) == {"web", "db"}
    assert set(view["hosts"]["web"]) == {"i-web1", "i-web2"}
    # env is role-scoped: web sees its own parameters, never db's.
    assert view["env"] == {"port": "80", "workers": "4"}
    assert view["cmd"] == {"id": "cmd-1", "cmd": "opt/app/bin/init", "timeout": "60"}
    assert view["cluster"]["cluster_id"] == "c1"
    assert view["endpoints"] == {"http": {"port": "8000", "protocol": "tcp"}}
    # Links: same-owner c2 is visible read-only (hosts, cluster, endpoints); c3 of another owner is not.
    assert set(view["links"]) == {"store"}
    assert set(view["links"]["store"]) == {"hosts", "cluster", "endpoints"}
    assert view["links"]["store"]["cluster"]["cluster_id"] == "c2"
    assert "status" not in view and "adding-hosts" not in view

    status, db_view, _ = await instances.get(net.ip(200), "/self")
    assert db_view["env"] == {"max_conn": "100"}
    assert db_view["host"]["instance_id"] == "i-db1"
    assert "cmd" not in db_view  # only i-web1 has a command


async def test_subpaths_formats_and_versions(seed, instances, net, metad: Metad) -> None:
    await seed()
    status, ip, headers = await instances.get(net.ip(2), "/self/host/ip")
    assert (status, ip) == (200, net.ip(2))
    assert int(headers["X-Metad-Version"]) == metad.mirror.revision

    status, text, headers = await instances.get(net.ip(2), "/self/host", accept="text/plain")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = text.splitlines()
    assert lines == sorted(lines)
    assert f"/ip\t{net.ip(2)}" in lines and "/instance_id\ti-web2" in lines

    status, leaf, _ = await instances.get(net.ip(2), "/self/env/port", accept="text/plain")
    assert (status, leaf) == (200, "80")

    status, text, headers = await instances.get(net.ip(2), "/self/env", accept="application/x-yaml")
    assert status == 200 and "yaml" in headers["Content-Type"]
    assert yaml.safe_load(text) == {"port": "80", "workers": "4"}

    # The agent's metad backend asks for JSON; */* (curl, wget, browsers) gets metad's text.
    status, env, _ = await instances.get(net.ip(2), "/self/env", accept="application/json")
    assert env == {"port": "80", "workers": "4"}
    for accept in ("", "*/*", "text/html, */*;q=0.8"):
        status, text, headers = await instances.get(net.ip(2), "/self/env", accept=accept)
        assert (status, text, headers["Content-Type"]) == (200, "/port\t80\n/workers\t4\n", "text/plain")

    status, body, _ = await instances.get(net.ip(2), "/self/links/store/hosts/s/i-s1/ip")
    assert (status, body) == (200, net.ip(201))

    status, root, _ = await instances.get(net.ip(2), "/")
    assert set(root) == {"self"} and root["self"]["host"]["instance_id"] == "i-web2"


async def test_missing_paths_are_404_json(seed, instances, net) -> None:
    await seed()
    for path in (
        "/self/host/nope",
        "/self/cmd",
        "/self/links/foreign",
        "/self/status",
        "/clusters/c1",
        "/hosts",
    ):
        ip = net.ip(2)
        status, body, headers = await instances.get(ip, path, accept="text/plain")
        assert (status, body) == (404, "Not found\n"), path
        assert "X-Metad-Version" in headers
        status, body, headers = await instances.get(ip, path)
        assert (status, body) == (404, {"code": 404, "message": "Not found", "type": "ERROR"}), path


async def _raw_get(
    ip: str, base_url: str, target: str, accept: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """A GET with the request target exactly as given (clients resolve ``..`` before sending)."""
    host, port = base_url.split("://")[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(ip, 0))
    try:
        extra = f"Accept: {accept}\r\n" if accept else ""
        writer.write(f"GET {target} HTTP/1.1\r\nHost: metad\r\n{extra}Connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_unclean_paths_redirect_and_pretty_indents(seed, instances, net, metad: Metad) -> None:
    """metad's 301 to the clean path (query kept) for ``..``, ``.`` and ``//``; ``?pretty``."""
    await seed()
    for target, location in (
        ("/self/host/../env", "/self/env"),
        ("/self/./env/?wait=true&prev_version=1", "/self/env/?wait=true&prev_version=1"),
        ("//self/env", "/self/env"),
        ("/../self", "/self"),
    ):
        status, headers, body = await _raw_get(net.ip(2), metad.instance_url, target)
        assert (status, headers.get("location"), body) == (301, location, b""), target
    # Unmapped callers are redirected too (as metad, before identification); the target refuses them.
    status, headers, _ = await _raw_get(net.ip(150), metad.instance_url, "/self/host/../env")
    assert (status, headers["location"]) == (301, "/self/env")
    status, headers, body = await _raw_get(
        net.ip(2), metad.instance_url, "/self/env?pretty=true", "application/json"
    )
    assert (status, body) == (200, b'{\n  "port": "80",\n  "workers": "4"\n}')
    status, headers, body = await _raw_get(
        net.ip(2), metad.instance_url, "/self?pretty=1", "application/json"
    )
    assert body.startswith(b'{\n  "cluster": {') and json.loads(body)["host"]["instance_id"] == "i-web2"
    status, headers, body = await _raw_get(
        net.ip(2), metad.instance_url, "/self/env?pretty=false", "application/json"
    )
    assert body == b'{"port":"80","workers":"4"}'


async def test_unknown_caller_is_refused(seed, instances, net) -> None:
    await seed()
    status, body, _ = await instances.get(net.ip(150), "/self")
    assert status == 403 and net.ip(150) in body["error"]
    status, body = await instances.put(net.ip(150), "/self/status/health", {"ok": True})
    assert status == 403


async def test_status_write_back_goes_to_own_keys(seed, instances, net, store: Store) -> None:
    await seed()
    ip = net.ip(1)
    status, body = await instances.put(
        ip, "/self/status/applied", {"revision": 7, "resources": {"nginx": {"ok": True, "error": None}}}
    )
    assert status == 200 and body["revision"] > 0
    kv = await store.get("/_pitrix/status/c1/i-web1/applied")
    assert kv is not None and kv.json()["revision"] == 7

    status, _ = await instances.put(ip, "/self/status/health", {"ok": False, "error": "port 80 closed"})
    assert status == 200
    kv = await store.get("/_pitrix/status/c1/i-web1/health")
    assert kv is not None and kv.json() == {"ok": False, "error": "port 80 closed"}

    result = {"status": "successful", "exit_code": 0, "started": 1.0, "finished": 2.0, "output_tail": "done"}
    status, _ = await instances.put(ip, "/self/status/cmd/cmd-1", result)
    assert status == 200
    kv = await store.get("/_pitrix/status/c1/i-web1/cmd/cmd-1")
    assert kv is not None and kv.json() == result

    # i-db1 writes land under its own instance, whatever it claims.
    status, _ = await instances.put(net.ip(200), "/self/status/health", {"ok": True})
    assert status == 200
    assert (await store.get("/_pitrix/status/c1/i-db1/health")) is not None


async def test_writes_outside_own_status_are_forbidden(seed, instances, net, store: Store) -> None:
    await seed()
    ip = net.ip(1)
    for path in (
        "/self/host/ip",
        "/self/env/port",
        "/clusters/c1/env/web/port",
        "/self/status/other",
        "/self/status/cmd",
        "/self/status/cmd/a/b",
        "/self/status",
        "/_pitrix/status/c1/i-web2/health",
    ):
        status, body = await instances.put(ip, path, {"ok": True})
        assert status == 403, path
        assert body["code"] == 403
    kv = await store.get("/clusters/c1/env/web/port")
    assert kv is not None and kv.text == "80"


async def test_bad_bodies_name_the_field(seed, instances, net) -> None:
    await seed()
    ip = net.ip(1)
    cases = [
        ("/self/status/applied", {"resources": {}}, "revision"),
        ("/self/status/applied", {"revision": "7"}, "revision"),
        ("/self/status/applied", {"revision": 1, "resources": {"a": {"ok": "yes"}}}, "resources.a.ok"),
        ("/self/status/health", {"healthy": True}, "ok"),
        ("/self/status/health", [1, 2], "body"),
        ("/self/status/cmd/cmd-1", {"status": "done"}, "status"),
        ("/self/status/cmd/cmd-1", {"status": "successful"}, "exit_code"),
        ("/self/status/cmd/cmd-1", {"status": "failed", "exit_code": "1"}, "exit_code"),
        ("/self/status/cmd/cmd-1", {"status": "failed", "output_tail": 5}, "output_tail"),
        ("/self/status/cmd/..", {"status": "failed"}, "cmd_id"),
        ("/self/status/heartbeat", {"interval": -1}, "interval"),
        ("/self/status/heartbeat", {"interval": True}, "interval"),
    ]
    for path, body, field in cases:
        status, answer = await instances.put(ip, path, body)
        if path.endswith("/.."):
            # aiohttp's client normalises the dot segment away: the request is for /self/status.
            assert status == 403
            continue
        assert status == 400, (path, body)
        assert answer["field"] == field, (path, body, answer)
        assert field.split(".")[0] in answer["error"]
    status, answer = await instances.put(ip, "/self/status/health", raw=b"{not json")
    assert status == 400 and answer["field"] == "body"
    status, answer = await instances.put(ip, "/self/status/cmd/bad%20id", {"status": "failed"})
    assert status == 400 and answer["field"] == "cmd_id"


async def test_heartbeat_lives_on_a_lease_that_expires(seed, instances, net, store: Store) -> None:
    await seed()
    ip = net.ip(1)
    status, _ = await instances.put(ip, "/self/status/heartbeat", {"interval": 1})
    assert status == 200
    key = "/_pitrix/status/c1/i-web1/heartbeat"
    first = await store.get(key)
    assert first is not None and first.lease != 0
    assert json.loads(first.value)["interval"] == 1
    # A second beat reuses (refreshes) the same lease instead of granting a new one each time.
    status, _ = await instances.put(ip, "/self/status/heartbeat", {"interval": 1, "time": 2.0})
    second = await store.get(key)
    assert second is not None and second.lease == first.lease
    # The agent stops beating: the key disappears with its lease (ttl 3 s), no sweeper involved.
    watch = store.watch_prefix(key, second.mod_revision + 1)
    try:
        async with asyncio.timeout(15):
            async for batch in watch:
                if any(event.type == "delete" and event.key == key for event in batch.events):
                    break
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    assert await store.get(key) is None


async def test_a_beat_with_no_news_renews_the_lease_and_writes_nothing(
    seed, instances, net, store: Store, metad: Metad, manage
) -> None:
    """At thousands of agents, a write per beat was most of metad's work and woke every status
    watcher; only a new agent run, version or interval is news, the lease carries liveness."""
    await seed()
    ip = net.ip(1)
    key = "/_pitrix/status/c1/i-web1/heartbeat"
    run = {"interval": 1, "pid": 7, "started": "2026-12-05T10:00:00.000000Z"}
    status, answer = await instances.put(ip, "/self/status/heartbeat", {**run, "time": "a", "uptime": 1})
    assert status == 200
    first = await store.get(key)
    assert first is not None and first.mod_revision == answer["revision"]
    await metad.mirror.wait_for_revision(first.mod_revision)
    # Beats past the lease's TTL (3 s): the key lives on, never rewritten.
    for beat in range(5):
        status, _ = await instances.put(
            ip, "/self/status/heartbeat", {**run, "time": f"b{beat}", "uptime": 2 + beat}
        )
        assert status == 200
        await asyncio.sleep(1)  # the agent's interval: beating is the behaviour under test
    kept = await store.get(key)
    assert kept is not None and kept.mod_revision == first.mod_revision
    assert json.loads(kept.value)["time"] == "a"  # the first beat of this run
    # A new run of the agent (same pid, in a light VM's shared process) is news: written.
    status, answer = await instances.put(
        ip, "/self/status/heartbeat", {**run, "started": "2026-12-05T11:00:00.000000Z", "time": "c"}
    )
    restarted = await store.get(key)
    assert restarted is not None and restarted.mod_revision == answer["revision"] > first.mod_revision
    assert restarted.lease == first.lease
    # Someone deletes the key (the lease still lives): the next beat, no news, writes it again.
    await metad.mirror.wait_for_revision(await manage.delete_data(key))
    again = {**run, "started": "2026-12-05T11:00:00.000000Z"}
    status, answer = await instances.put(ip, "/self/status/heartbeat", again)
    back = await store.get(key)
    assert back is not None and back.mod_revision == answer["revision"]
    # Another metad of the cluster wrote the same run's beat on a lease of its own (the agent
    # failed over and back): that lease dies with the other metad's silence, so this one writes.
    other_lease, _ttl = await store.grant_lease(30)
    theirs = json.dumps({**json.loads(back.value), "received": 1.0})
    await metad.mirror.wait_for_revision(await store.put(key, theirs, lease=other_lease))
    status, answer = await instances.put(ip, "/self/status/heartbeat", again)
    ours = await store.get(key)
    assert ours is not None and ours.lease == first.lease and ours.mod_revision == answer["revision"]
    await store.revoke_lease(other_lease)


async def test_a_gone_instance_leaves_no_lease_on_record(seed, instances, net, metad: Metad, manage) -> None:
    """A metad lives for months while instances come and go: what it keeps per instance must go too."""
    await seed()
    beat = {"interval": 5, "pid": 7, "started": "2026-12-06T01:00:00.000000Z"}
    for n in (1, 2):
        status, _ = await instances.put(net.ip(n), "/self/status/heartbeat", beat)
        assert status == 200
    assert metad.leases.holds("i-web1") and metad.leases.holds("i-web2")
    # Deleted through the management API, as pitrixd deletes a node.
    assert await metad.mirror.wait_for_revision(await manage.delete_mapping("i-web1"))
    assert not metad.leases.holds("i-web1") and metad.leases.holds("i-web2")
    # Gone in a resync (the deletion was compacted away before the mirror saw it).
    kvs, revision = await metad.store.get_prefix("/")
    kept = [kv for kv in kvs if not kv.key.startswith("/_pitrix/mapping/i-web2/")]
    await metad.mirror.apply(WatchBatch(revision=revision, resync=True, state=kept))
    assert not metad.leases.holds("i-web2")
    status, _ = await instances.put(net.ip(2), "/self/status/heartbeat", beat)
    assert status == 403  # and it is a stranger now, refused before any lease is granted
    assert not metad.leases.holds("i-web2")


async def test_health_check_is_projected_per_role(seed, instances, net, manage) -> None:
    """``/self/health`` is the role's check, as ``env`` is the role's parameters."""
    await seed()
    await manage.put_data(
        "/clusters/c1/health/web", {"cmd": "opt/app/bin/check", "interval": 5, "timeout": 2}
    )
    status, health, _ = await instances.get(net.ip(1), "/self/health")
    assert (status, health) == (200, {"cmd": "opt/app/bin/check", "interval": "5", "timeout": "2"})
    status, _, _ = await instances.get(net.ip(200), "/self/health")  # db has no check
    assert status == 404
    status, view, _ = await instances.get(net.ip(1), "/self")
    assert view["health"]["cmd"] == "opt/app/bin/check"
    # A long-poll on /self/health wakes when the role's check changes.
    version = (await instances.get(net.ip(1), "/self/health"))[2]["X-Metad-Version"]
    poll = asyncio.create_task(
        instances.get(net.ip(1), "/self/health/cmd", wait="true", prev_version=version)
    )
    await manage.put_data("/clusters/c1/health/web", {"cmd": "opt/app/bin/check2"})
    status, cmd, _ = await asyncio.wait_for(poll, 10)
    assert (status, cmd) == (200, "opt/app/bin/check2")


async def test_a_staged_env_is_the_instance_own_env_and_no_one_else_sees_it(
    seed, instances, net, manage
) -> None:
    """An env rollout's batch: ``/clusters/<cid>/staged-env/<iid>`` is that instance's whole
    ``/self/env`` while present (passwords too), never another's; its change wakes a long-poll."""
    await seed()
    version = (await instances.get(net.ip(1), "/self/env"))[2]["X-Metad-Version"]
    poll = asyncio.create_task(instances.get(net.ip(1), "/self/env/port", wait="true", prev_version=version))
    await manage.post_data("/clusters/c1/staged-env/i-web1", {"port": "81", "workers": "4", "secret": "s"})
    status, port, _ = await asyncio.wait_for(poll, 10)
    assert (status, port) == (200, "81")
    status, view, _ = await instances.get(net.ip(1), "/self")
    assert view["env"] == {"port": "81", "workers": "4", "secret": "s"}
    for ip in (net.ip(2), net.ip(200)):  # the role's other node, another role: their own env only
        status, view, _ = await instances.get(ip, "/self")
        assert "secret" not in json.dumps(view) and "staged-env" not in json.dumps(view)
    assert (await instances.get(net.ip(2), "/self/env"))[1] == {"port": "80", "workers": "4"}
    # the rollout commits (or rolls back): the staged copy goes, the role's env shows again
    await manage.delete_data("/clusters/c1/staged-env/i-web1")
    assert (await instances.get(net.ip(1), "/self/env"))[1] == {"port": "80", "workers": "4"}


def test_spliced_self_json_is_the_rendered_view_after_every_change() -> None:
    """The role's shared sections, rendered once per tree generation, spliced with the
    instance's own: byte for byte what rendering the whole view gives, and never stale."""
    from pitrix.metad import render, selfview
    from pitrix.metad.tree import Tree

    tree = Tree()
    shared = render.SharedSections()
    revision = 0

    def put(key: str, value: str) -> None:
        nonlocal revision
        revision += 1
        tree.put(key, value, revision)

    def delete(key: str) -> None:
        nonlocal revision
        revision += 1
        tree.delete(key, revision)

    for iid, role in (("i-w1", "web"), ("i-w2", "web"), ("i-d1", "db"), ("i-x", "web")):
        cid = "c3" if iid == "i-x" else "c1"
        for field, value in {"cluster_id": cid, "role": role, "ip": "10.0.0.1"}.items():
            put(f"/_pitrix/mapping/{iid}/{field}", value)
    put("/clusters/c1/cluster/owner", "usr-a")
    put("/clusters/c2/cluster/owner", "usr-a")
    put("/clusters/c3/cluster/owner", "usr-b")
    put("/clusters/c1/links/store", "c2")
    put("/clusters/c1/links/foreign", "c3")
    put("/clusters/c2/endpoints/db/port", "5432")
    put("/clusters/c1/hosts/web/i-w1/ip", "10.0.0.1")
    put("/clusters/c1/hosts/db/i-d1/ip", "10.0.0.2")
    put("/clusters/c1/env/web/port", "80")
    put("/clusters/c1/env/db/port", "5432")
    put("/clusters/c1/cmd/i-w1/cmd", "start")
    put("/clusters/c3/env/web/secret", "usr-b-only")

    def check(generation: int) -> None:
        for iid in ("i-w1", "i-w2", "i-d1", "i-x"):
            mapping = selfview.Mapping.from_node(iid, tree.live(f"/_pitrix/mapping/{iid}"))
            assert mapping is not None
            expected = render.to_json(selfview.build(tree, mapping))
            assert render.self_json(tree, mapping, shared.get(tree, generation, mapping)) == expected

    check(1)
    # Each change is a new generation: shared sections are rendered afresh, not served stale.
    changes = [
        lambda: put("/clusters/c1/env/web/workers", "4"),
        lambda: put("/clusters/c1/cmd/i-w2/cmd", "stop"),
        lambda: put("/clusters/c1/hosts/web/i-w2/ip", "10.0.0.3"),
        lambda: put("/clusters/c2/endpoints/db/port", "6543"),
        lambda: put("/clusters/c3/cluster/owner", "usr-a"),  # the foreign link becomes visible
        lambda: delete("/clusters/c1/links/store"),
        lambda: put("/clusters/c1/adding-hosts/web/i-w3/ip", "10.0.0.4"),
        lambda: delete("/clusters/c1/env/db/port"),
        # an env rollout reaches i-w1 first: its env alone differs from the role's shared one
        lambda: put("/clusters/c1/staged-env/i-w1/port", "81"),
        lambda: put("/clusters/c1/env/web/port", "82"),
        lambda: delete("/clusters/c1/staged-env/i-w1"),
    ]
    for generation, change in enumerate(changes, start=2):
        change()
        check(generation)


async def test_published_values_are_seen_by_every_node_of_the_cluster_only(
    seed, instances, net, manage, metad: Metad
) -> None:
    """What a service printed with ``publish: true`` lands under ``/clusters/<cid>/published``:
    every node of that cluster, whatever its role, reads it at ``/self/published``; no other does."""
    await seed()
    status, view, _ = await instances.get(net.ip(1), "/self")
    assert status == 200 and "published" not in view
    status, _, _ = await instances.get(net.ip(1), "/self/published/initial")
    assert status == 404
    revision = await manage.put_data(
        "/clusters/c1/published", {"initial": "a=1,b=2", "members": {"a": "10.0.0.1"}}
    )
    await metad.mirror.wait_for_revision(revision)
    for ip in (net.ip(1), net.ip(2), net.ip(200)):  # both web nodes and the db node
        status, view, _ = await instances.get(ip, "/self")
        assert view["published"] == {"initial": "a=1,b=2", "members": {"a": "10.0.0.1"}}
    status, leaf, _ = await instances.get(net.ip(200), "/self/published/members/a", accept="text/plain")
    assert (status, leaf) == (200, "10.0.0.1")
    await manage.put_mapping("i-s1", {"cluster_id": "c2", "role": "s", "ip": net.ip(201)})
    status, other, _ = await instances.get(net.ip(201), "/self")
    assert status == 200 and "published" not in other


async def test_monitor_is_role_scoped_and_its_reports_are_checked(
    seed, instances, net, manage, store: Store
) -> None:
    await seed()
    monitor = {"cmd": "opt/app/stats", "interval": "30", "items": {"qps": {"unit": "1/s", "kind": "gauge"}}}
    await manage.put_data("/clusters/c1/monitor/web", monitor)
    status, view, _ = await instances.get(net.ip(1), "/self/monitor")
    assert (status, view) == (200, monitor)
    status, _, _ = await instances.get(net.ip(200), "/self/monitor")
    assert status == 404  # db declares none: web's is not its

    report = {"values": {"qps": 12.5, "errors": 3}, "error": None, "time": "2026-01-01T00:00:00Z"}
    status, _ = await instances.put(net.ip(1), "/self/status/monitor", report)
    assert status == 200
    kv = await store.get("/_pitrix/status/c1/i-web1/monitor")
    assert kv is not None and kv.json() == report
    for body, field in (
        ({"values": {"qps": "12"}}, "values.qps"),
        ({"values": {"qps": True}}, "values.qps"),
        ({"values": {"bad name": 1}}, "values.bad name"),
        ({"values": [1]}, "values"),
        ({"values": {}, "error": 5}, "error"),
        ({"values": {f"i{n}": n for n in range(65)}}, "values"),
    ):
        status, answer = await instances.put(net.ip(1), "/self/status/monitor", body)
        assert (status, answer["field"]) == (400, field), body


async def test_a_first_beat_metad_is_too_busy_for_is_answered_503_with_retry_after(
    seed, instances, net, store: Store, metad: Metad
) -> None:
    """Past its bound of first beats under way, metad refuses one with 503 and ``Retry-After``
    (and writes nothing); a renewal of a lease it holds is still taken."""
    await seed()
    web1, web2 = net.ip(1), net.ip(2)
    status, _ = await instances.put(web2, "/self/status/heartbeat", {"interval": 1})
    assert status == 200  # i-web2 holds its lease
    metad.leases.max_granting = 0  # as if that many first beats were under way
    url = metad.instance_url + "/self/status/heartbeat"
    async with instances.session(web1).put(url, json={"interval": 1}) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        answer = await response.json()
    assert answer["retry_after"] == 1 and "busy" in answer["error"]
    assert await store.get("/_pitrix/status/c1/i-web1/heartbeat") is None
    status, _ = await instances.put(web2, "/self/status/heartbeat", {"interval": 1, "pid": 2})
    assert status == 200  # a renewal (and news) of a held lease: never refused
    metad.leases.max_granting = 32
    status, _ = await instances.put(web1, "/self/status/heartbeat", {"interval": 1})
    assert status == 200
    assert await store.get("/_pitrix/status/c1/i-web1/heartbeat") is not None
