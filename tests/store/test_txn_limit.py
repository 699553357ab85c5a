"""pitrixd asks an external etcd at start-up whether it takes pitrixd's largest transaction (a
read-only probe of that many comparisons), rather than learning it from a refused scale-in."""

from __future__ import annotations

import pytest

from pitrix.runtime.txn_size import largest_transaction
from pitrix.store import Store
from pitrix.store.embedded import EMBEDDED_MAX_TXN_OPS
from pitrix.store.txn_limit import PROBE_KEY, TxnLimitTooLow, check_txn_ops


async def test_an_etcd_with_room_passes_and_one_without_is_named(store: Store) -> None:
    # The session etcd is an embedded one: started with room for pitrixd's largest write.
    assert 1000 <= largest_transaction() <= EMBEDDED_MAX_TXN_OPS
    before = await store.revision()
    await check_txn_ops(store, largest_transaction())
    with pytest.raises(TxnLimitTooLow, match=f"at least {EMBEDDED_MAX_TXN_OPS + 1}") as refused:
        await check_txn_ops(store, EMBEDDED_MAX_TXN_OPS + 1)
    assert "--max-txn-ops" in str(refused.value)
    assert await store.revision() == before  # the probe writes nothing
    assert await store.get(PROBE_KEY) is None
