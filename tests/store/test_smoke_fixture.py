from pitrix.store import Store


async def test_store_fixture_round_trip(store: Store) -> None:
    revision = await store.put("/a", b"1")
    kv = await store.get("/a")
    assert kv is not None and kv.value == b"1" and kv.mod_revision == revision
