"""Management API: data merge/replace/delete, mappings, and the resumable NDJSON watch."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from pitrix.metad.client import MetadClientError, MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store

DEADLINE = 10.0


async def test_put_merges_post_replaces_delete_removes(manage: MetadManagementClient, store: Store) -> None:
    await manage.put_data("/clusters/c1/env/web", {"port": 80, "tls": {"on": True, "cert": "a"}})
    await manage.put_data("/clusters/c1/env/web", {"workers": 4, "tls": {"cert": "b"}})
    assert await manage.get_data("/clusters/c1/env/web") == {
        "port": "80",
        "workers": "4",
        "tls": {"on": "true", "cert": "b"},
    }
    assert await manage.get_data("/clusters/c1/env/web/tls/cert") == "b"
    # null in a merge deletes that key (and any subtree under it).
    await manage.put_data("/clusters/c1/env/web", {"tls": None})
    assert await manage.get_data("/clusters/c1/env/web") == {"port": "80", "workers": "4"}

    rev = await manage.post_data("/clusters/c1/env/web", {"port": 81, "list": ["a", "b"]})
    assert await manage.get_data("/clusters/c1/env/web") == {"port": "81", "list": {"0": "a", "1": "b"}}
    kvs, _ = await store.get_prefix("/clusters/c1/env/web/")
    assert {kv.key for kv in kvs} == {
        "/clusters/c1/env/web/port",
        "/clusters/c1/env/web/list/0",
        "/clusters/c1/env/web/list/1",
    }
    # One transaction: every key of the replace carries the same revision.
    assert {kv.mod_revision for kv in kvs} == {rev}

    await manage.put_data("/clusters/c1/env/db/x", "1")
    deleted = await manage.delete_data("/clusters/c1/env/web")
    assert deleted > rev
    assert await manage.get_data("/clusters/c1/env/web") is None
    assert await manage.get_data("/clusters/c1/env") == {"db": {"x": "1"}}


async def test_leaf_and_directory_never_coexist(manage: MetadManagementClient, store: Store) -> None:
    await manage.put_data("/a/b", "leaf")
    await manage.put_data("/a/b", {"c": "1"})
    assert await manage.get_data("/a") == {"b": {"c": "1"}}
    assert await store.get("/a/b") is None
    await manage.put_data("/a/b", "leaf again")
    assert await manage.get_data("/a") == {"b": "leaf again"}
    kvs, _ = await store.get_prefix("/a/")
    assert [kv.key for kv in kvs] == ["/a/b"]


async def test_writes_are_atomic_and_read_your_writes(manage: MetadManagementClient, metad: Metad) -> None:
    rev = await manage.put_data("/clusters/c9", {"cluster": {"cluster_id": "c9"}, "env": {"r": {"k": "v"}}})
    # The answer comes after metad's own mirror applied the write.
    assert metad.mirror.revision >= rev
    assert (await manage.get_data("/clusters/c9/env/r/k")) == "v"


async def test_bad_documents_are_400_naming_the_field(manage: MetadManagementClient, metad: Metad) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("/x", {"a/b": "1"}, "/x/a/b"),
        ("/x", {"a": {"": "1"}}, "/x/a/"),
        ("/x", {"a": {"b": {"c": 1.5e400}}}, "/x/a/b/c"),
    ]
    for path, doc, field in cases:
        with pytest.raises(MetadClientError) as info:
            await manage.put_data(path, doc)
        assert info.value.status == 400, (path, doc)
        assert field in str(info.value), (field, str(info.value))
    async with (
        aiohttp.ClientSession() as session,
        session.put(metad.manage_url + "/v1/data/x", data=b"{broken") as response,
    ):
        assert response.status == 400
        assert (await response.json())["field"] == "body"


async def test_transactions_over_etcds_limit_fail_clearly(manage: MetadManagementClient) -> None:
    with pytest.raises(MetadClientError) as info:
        # beyond any etcd's limit here (the embedded one allows 2,048: pitrix.store.embedded)
        await manage.put_data("/big", {f"k{n}": n for n in range(3000)})
    assert info.value.status == 413 and "max-txn-ops" in str(info.value)
    assert await manage.get_data("/big") is None


async def test_mappings(manage: MetadManagementClient, net) -> None:
    ip = net.ip(5)
    await manage.put_mapping("i-1", {"cluster_id": "c1", "role": "web", "ip": ip})
    assert await manage.get_mapping("i-1") == {
        "instance_id": "i-1",
        "cluster_id": "c1",
        "role": "web",
        "ip": ip,
    }
    bad: list[tuple[dict[str, Any], str]] = [
        ({"cluster_id": "c1", "role": "web"}, "ip"),
        ({"cluster_id": "c1", "role": "web", "ip": "not-an-ip"}, "ip"),
        ({"cluster_id": "c/1", "role": "web", "ip": ip}, "cluster_id"),
        ({"cluster_id": "c1", "ip": ip}, "role"),
        ({"instance_id": "i-2", "cluster_id": "c1", "role": "web", "ip": ip}, "instance_id"),
    ]
    for doc, field in bad:
        with pytest.raises(MetadClientError) as info:
            await manage.put_mapping("i-1", doc)
        assert info.value.status == 400 and field in str(info.value), (doc, str(info.value))
    with pytest.raises(MetadClientError) as info:
        await manage.put_mapping("i-2", {"cluster_id": "c1", "role": "web", "ip": ip})
    assert info.value.status == 409
    # Re-mapping replaces the whole mapping.
    await manage.put_mapping("i-1", {"cluster_id": "c2", "role": "db", "ip": ip})
    remapped = await manage.get_mapping("i-1")
    assert remapped is not None and remapped["cluster_id"] == "c2"
    await manage.delete_mapping("i-1")
    assert await manage.get_mapping("i-1") is None
    await manage.put_mapping("i-2", {"cluster_id": "c1", "role": "web", "ip": ip})


async def test_healthz_on_both_ports(metad: Metad, manage: MetadManagementClient) -> None:
    assert (await manage.healthz())["ok"] is True
    async with aiohttp.ClientSession() as session, session.get(metad.instance_url + "/healthz") as response:
        assert response.status == 200 and (await response.json())["ok"] is True


# -- watch ----------------------------------------------------------------------------------------


async def _collect(stream: Any, count: int) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(DEADLINE):
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_watch_from_revision_replays_and_follows(manage: MetadManagementClient, store: Store) -> None:
    r1 = await manage.put_data("/clusters/w/env/r/a", "1")
    r2 = await manage.put_data("/clusters/w/env/r/b", "2")
    await manage.put_data("/elsewhere/x", "ignored")
    stream = manage.watch("/clusters/w", r2)
    first = await _collect(stream, 1)
    assert first == [{"revision": r2, "type": "put", "key": "/clusters/w/env/r/b", "value": "2"}]
    r4 = await manage.delete_data("/clusters/w/env/r/a")
    nxt = await _collect(stream, 1)
    assert nxt == [{"revision": r4, "type": "delete", "key": "/clusters/w/env/r/a", "value": None}]
    await stream.aclose()
    # From r1: both puts and the delete, in order.
    stream = manage.watch("/clusters/w", r1)
    events = await _collect(stream, 3)
    await stream.aclose()
    assert [(e["type"], e["revision"]) for e in events] == [("put", r1), ("put", r2), ("delete", r4)]


async def test_requests_go_through_beside_many_open_watches(manage: MetadManagementClient) -> None:
    """The runtime follows one watch per cluster at work on one client: past a connection pool's
    size (aiohttp's default is 100) those streams must not leave writes waiting for a connection."""
    revision = await manage.put_data("/clusters/many/env/r/a", "1")
    streams = [manage.watch("/clusters/many", revision) for _ in range(110)]
    try:
        async with asyncio.timeout(60):  # every stream holds its connection once it has an event
            firsts = await asyncio.gather(*(_collect(s, 1) for s in streams))
        assert all(f[0]["revision"] == revision for f in firsts)
        async with asyncio.timeout(DEADLINE):
            later = await manage.put_data("/clusters/other/env/r/b", "2")
            assert await manage.get_data("/clusters/other/env/r/b") == "2"
        assert later > revision
    finally:
        await asyncio.gather(*(s.aclose() for s in streams))


async def test_watch_resyncs_after_compaction(private_store: Store, net) -> None:
    async with (
        Metad(private_store, net.metad_ip, 0, 0) as metad,
        MetadManagementClient(metad.manage_url) as manage,
    ):
        r1 = await manage.put_data("/clusters/z/env/r", {"a": "1", "b": "2"})
        await manage.delete_data("/clusters/z/env/r/a")
        r3 = await manage.put_data("/clusters/z/env/r/c", "3")
        await manage.put_data("/clusters/other/x", "not under the prefix")
        await private_store.client.compact(r3)
        stream = manage.watch("/clusters/z", r1)
        head = (await _collect(stream, 1))[0]
        assert head["type"] == "resync" and head["count"] == 2 and head["revision"] >= r3
        state = await _collect(stream, 2)
        assert {e["key"]: e["value"] for e in state} == {
            "/clusters/z/env/r/b": "2",
            "/clusters/z/env/r/c": "3",
        }
        r4 = await manage.put_data("/clusters/z/env/r/d", "4")
        after = await _collect(stream, 1)
        await stream.aclose()
        assert after == [{"revision": r4, "type": "put", "key": "/clusters/z/env/r/d", "value": "4"}]


async def test_watch_stream_keepalive_and_bad_params(metad: Metad) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(metad.manage_url + "/v1/watch", params={"prefix": "/q"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/x-ndjson")
            blanks = 0
            async with asyncio.timeout(DEADLINE):
                async for line in response.content:
                    assert line.strip() == b""
                    blanks += 1
                    if blanks == 3:  # the greeting plus two keepalives (every 0.3 s here)
                        break
        for params, field in (({"from_revision": "x"}, "from_revision"), ({"prefix": "q"}, "prefix")):
            async with session.get(metad.manage_url + "/v1/watch", params=params) as response:
                assert response.status == 400 and field in (await response.json())["error"]


async def test_client_watch_resumes_across_a_metad_restart(store: Store, net) -> None:
    first = Metad(store, net.metad_ip, 0, 0, keepalive=0.3)
    await first.start()
    port = int(first.manage_url.rsplit(":", 1)[1])
    client = MetadManagementClient(first.manage_url, idle_timeout=2.0, max_backoff=0.2)
    second: Metad | None = None
    try:
        r1 = await client.put_data("/clusters/r/env/x", {"a": "1"})
        stream = client.watch("/clusters/r", r1)
        assert (await _collect(stream, 1))[0]["revision"] == r1
        await first.stop()
        # Written while no metad serves: the resumed stream must still deliver it, exactly once.
        missed = await store.put("/clusters/r/env/x/b", "2")
        second = Metad(store, net.metad_ip, 0, port, keepalive=0.3)
        await second.start()
        later = await client.put_data("/clusters/r/env/x/c", "3")
        events = await _collect(stream, 2)
        await stream.aclose()
        assert [(e["revision"], e["key"]) for e in events] == [
            (missed, "/clusters/r/env/x/b"),
            (later, "/clusters/r/env/x/c"),
        ]
    finally:
        await client.close()
        if second is not None:
            await second.stop()
        await first.stop()


async def test_client_reports_refusals(manage: MetadManagementClient) -> None:
    stream = manage.watch("no-slash", 1)
    with pytest.raises(MetadClientError) as info:
        await _collect(stream, 1)
    assert info.value.status == 400


async def test_a_metadata_cluster_s_client_moves_on_past_a_member_without_its_etcd(net: Any) -> None:
    """Another member when one cannot be reached or answers 503 (its etcd away); any other answer,
    even an error, is the answer (nothing else is sent twice)."""
    from aiohttp import web

    from pitrix.metad.client import FailoverManagementClient

    seen: list[str] = []

    def member(name: str, status: int) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            seen.append(name)
            return web.json_response({"error": name, "revision": 7}, status=status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    runners = []
    urls = []
    for n, (name, status) in enumerate((("etcd-away", 503), ("refuses", 409), ("fine", 200))):
        runner = web.AppRunner(member(name, status))
        await runner.setup()
        ip = net.ip(220 + n)
        site = web.TCPSite(runner, ip, 0)
        await site.start()
        runners.append(runner)
        urls.append(f"http://{ip}:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]
    try:
        async with FailoverManagementClient([urls[0], urls[2]]) as client:
            assert await client.put_data("/x", {"a": 1}) == 7
            assert seen == ["etcd-away", "fine"] and client.base_url == urls[2]
        seen.clear()
        async with FailoverManagementClient([urls[1], urls[2]]) as client:
            with pytest.raises(MetadClientError) as refused:
                await client.put_data("/x", {"a": 1})
            assert refused.value.status == 409 and seen == ["refuses"]
        async with FailoverManagementClient([urls[0]]) as client:
            with pytest.raises(MetadClientError) as away:
                await client.healthz()
            assert away.value.status == 503  # the last member's answer is the caller's
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_hundreds_of_watches_leave_writes_and_heartbeats_unhurried(
    seed, instances, net, manage: MetadManagementClient, metad: Metad, store: Store
) -> None:
    """The runtime watches every cluster it works on: 300 at once. Past ~200 streams on one gRPC
    channel every further call on it waited out its deadline, so the store runs watches on channels
    of their own and a heartbeat and a management write still go through while they are open."""
    await seed()
    watches = [manage.watch("/clusters/c9/", None) for _ in range(300)]
    firsts = [asyncio.ensure_future(w.__anext__()) for w in watches]
    try:
        await asyncio.sleep(0)
        revision = await manage.put_data("/clusters/c9/env", {"n": "1"})
        seen = await asyncio.wait_for(asyncio.gather(*firsts), 60)  # every watch is open and live
        assert all(event["revision"] == revision for event in seen)
        pool = metad.store.watch_pool  # the 300 and metad's own (its mirror's)
        assert pool.streams >= 300 and pool.channels == -(-pool.streams // pool.per_channel)
        # Each below waits for the store; on a channel stuck behind the watches it would be a 503
        # after the store's timeout instead.
        status, _ = await instances.put(net.ip(1), "/self/status/heartbeat", {"interval": 1})
        assert status == 200
        assert await manage.put_data("/clusters/c9/env", {"n": "2"}) > revision
        assert await store.get("/_pitrix/status/c1/i-web1/heartbeat") is not None
    finally:
        for first in firsts:
            first.cancel()
        for watch in watches:
            await watch.aclose()
