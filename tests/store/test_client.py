"""Every Store operation against the session's real etcd."""

from __future__ import annotations

import uuid

import pytest

from pitrix.store import KV, Compare, Op, Store, StoreError
from pitrix.store.client import RevisionCompacted
from pitrix.store.tls import EtcdTLS


async def test_put_get_round_trip_reports_the_write_revision(store: Store) -> None:
    revision = await store.put("/a", b"1")
    kv = await store.get("/a")
    assert kv == KV(key="/a", value=b"1", mod_revision=revision, create_revision=revision, version=1, lease=0)
    second = await store.put("/a", "two")
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.value, kv.text, kv.mod_revision, kv.create_revision, kv.version) == (
        b"two",
        "two",
        second,
        revision,
        2,
    )
    assert second > revision


async def test_get_missing_key_is_none(store: Store) -> None:
    assert await store.get("/nope") is None


async def test_get_prefix_is_sorted_and_reports_the_revision(store: Store) -> None:
    await store.put("/p/b", b"2")
    await store.put("/p/a", b"1")
    last = await store.put("/p/c/deep", b"3")
    await store.put("/q", b"outside")
    kvs, revision = await store.get_prefix("/p/")
    assert [kv.key for kv in kvs] == ["/p/a", "/p/b", "/p/c/deep"]
    assert revision == last + 1  # the put of /q came after
    empty, empty_revision = await store.get_prefix("/none/")
    assert empty == [] and empty_revision == revision


async def test_revision_is_current_and_reads_nothing(store: Store) -> None:
    before = await store.revision()
    assert await store.revision() == before
    written = await store.put("/r", b"x")
    assert written == before + 1
    assert await store.revision() == written


async def test_store_prefixes_do_not_leak_into_each_other(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    base = f"/iso-{uuid.uuid4().hex}"
    async with (
        Store([etcd_url], prefix=base, tls=etcd_tls) as short,
        Store([etcd_url], prefix=base + "x", tls=etcd_tls) as longer,
    ):
        await short.put("/k", b"short")
        await longer.put("/k", b"longer")
        kvs, _ = await short.get_prefix("")
        assert [(kv.key, kv.value) for kv in kvs] == [("/k", b"short")]
        assert await short.delete_prefix("") == 1
        assert await longer.get("/k") is not None


async def test_put_many_is_one_revision(store: Store) -> None:
    revision = await store.put_many([("/m/1", b"a"), ("/m/2", "b"), ("/m/3", b"c")])
    kvs, _ = await store.get_prefix("/m/")
    assert [kv.value for kv in kvs] == [b"a", b"b", b"c"]
    assert {kv.mod_revision for kv in kvs} == {revision}


async def test_delete_and_delete_prefix(store: Store) -> None:
    await store.put_many([("/d/1", b""), ("/d/2", b""), ("/d2", b"sibling")])
    assert await store.delete("/d/1") is True
    assert await store.delete("/d/1") is False
    assert await store.delete_prefix("/d/") == 1
    assert await store.get("/d2") is not None
    assert await store.delete_prefix("/d/") == 0


async def test_txn_runs_the_branch_its_comparisons_choose(store: Store) -> None:
    rev = await store.put("/t/flag", b"on")
    ok = await store.txn(
        [Compare("/t/flag", "value", "==", b"on"), Compare("/t/flag", "mod", "==", rev)],
        [Op("put", "/t/out", b"yes"), Op("get", "/t/flag"), Op("get", "/t/missing")],
        [Op("put", "/t/out", b"no")],
    )
    assert ok.succeeded
    assert ok.revision == rev + 1
    assert [g.value if g else None for g in ok.gets] == [b"on", None]
    failed = await store.txn(
        [Compare("/t/flag", "version", ">", 5)],
        [Op("put", "/t/out", b"yes")],
        [Op("delete", "/t/out"), Op("get", "/t/flag")],
    )
    assert not failed.succeeded
    assert await store.get("/t/out") is None
    assert len(failed.gets) == 1 and failed.gets[0] is not None and failed.gets[0].value == b"on"
    read_only = await store.txn([Compare("/t/flag", "value", "!=", b"off")], [Op("get", "/t/flag")])
    assert read_only.succeeded and read_only.revision == failed.revision


async def test_txn_delete_prefix_op(store: Store) -> None:
    await store.put_many([("/x/1", b""), ("/x/2", b""), ("/y", b"")])
    result = await store.txn([], [Op("delete_prefix", "/x/")])
    assert result.succeeded
    kvs, _ = await store.get_prefix("")
    assert [kv.key for kv in kvs] == ["/y"]


async def test_create_only_once(store: Store) -> None:
    assert await store.create("/c", b"first") is True
    assert await store.create("/c", b"second") is False
    kv = await store.get("/c")
    assert kv is not None and kv.value == b"first"


async def test_compare_and_swap(store: Store) -> None:
    assert await store.compare_and_swap("/cas", 0, b"v1") is True
    assert await store.compare_and_swap("/cas", 0, b"again") is False
    kv = await store.get("/cas")
    assert kv is not None
    assert await store.compare_and_swap("/cas", kv.mod_revision - 1, b"stale") is False
    assert await store.compare_and_swap("/cas", kv.mod_revision, b"v2") is True
    assert await store.compare_and_swap("/cas", kv.mod_revision, b"v3") is False
    final = await store.get("/cas")
    assert final is not None and final.value == b"v2"


async def test_concurrent_cas_has_exactly_one_winner(store: Store) -> None:
    import asyncio

    await store.put("/counter", b"0")
    kv = await store.get("/counter")
    assert kv is not None
    results = await asyncio.gather(
        *(store.compare_and_swap("/counter", kv.mod_revision, f"{i}") for i in range(8))
    )
    assert sum(results) == 1


async def test_lease_attached_keys_vanish_on_revoke(store: Store) -> None:
    lease_id, ttl = await store.grant_lease(30)
    assert ttl == 30 and lease_id > 0
    await store.put("/leased", b"x", lease=lease_id)
    kv = await store.get("/leased")
    assert kv is not None and kv.lease == lease_id
    assert 0 < await store.lease_ttl(lease_id) <= 30
    assert await store.revoke_lease(lease_id) is True
    assert await store.get("/leased") is None
    assert await store.revoke_lease(lease_id) is False
    assert await store.lease_ttl(lease_id) == -1
    assert await store.refresh_lease(lease_id) == 0


async def test_compacted_history_is_a_clear_error(private_store: Store) -> None:
    store = private_store
    old = await store.put("/h", b"1")
    now = await store.put("/h", b"2")
    await store.compact(now)
    with pytest.raises(RevisionCompacted):
        await store.range(store._k("/h"), revision=old)
    kvs, _, _ = await store.range(store._k("/h"), revision=now)
    assert kvs[0].value == b"2"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.put("/k", 5), "value"),
        (lambda s: s.put(5, b""), "key"),
        (lambda s: s.put("/k", b"", lease=-1), "lease"),
        (lambda s: s.txn([Compare("/k", "bogus", "==", 1)], []), "compare.target"),  # type: ignore[arg-type]
        (lambda s: s.txn([Compare("/k", "version", "~", 1)], []), "compare.op"),  # type: ignore[arg-type]
        (lambda s: s.txn([Compare("/k", "mod", "==", b"x")], []), "compare.value"),
        (lambda s: s.txn([], [Op("upsert", "/k")]), "op.kind"),  # type: ignore[arg-type]
        (lambda s: s.compare_and_swap("/k", -1, b""), "mod_revision"),
        (lambda s: s.grant_lease(0), "ttl"),
        (lambda s: s.compact(0), "revision"),
        (lambda s: s.range(b"/", sort_target="size"), "sort_target"),
        (lambda s: s.range(b"/", sort_order="up"), "sort_order"),
    ],
)
async def test_bad_input_names_the_field(store: Store, call: object, field: str) -> None:
    with pytest.raises(StoreError, match=rf"^{field}"):
        await call(store)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ([], "endpoints"),
        (["nohost"], "endpoints"),
        (["https://127.0.0.1:1"], "endpoints"),
        (["x:notaport"], "endpoints"),
    ],
)
def test_bad_endpoints_are_refused(endpoints: list[str], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store(endpoints)


async def test_closed_store_refuses_requests(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    s = await Store.connect([etcd_url], prefix="/closed", tls=etcd_tls)
    await s.close()
    with pytest.raises(StoreError, match="not connected"):
        await s.get("/x")
