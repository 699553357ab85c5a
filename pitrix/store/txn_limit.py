"""Whether an etcd takes transactions as large as its user writes.

etcd refuses a transaction with more operations in any of its parts (comparisons, success,
failure) than its ``--max-txn-ops`` (128 unless set), and nothing in the API tells the limit. A
user that learns it only when its largest write is refused has already half done something (a
scale-in that marked no leaver), so it asks at start-up instead: a read-only transaction of as
many comparisons as it will ever need, which the etcd checks against its limit before anything
else and which changes nothing.
"""

from __future__ import annotations

from pitrix.store.client import Store, StoreError
from pitrix.store.types import Compare

PROBE_KEY = "/_probe/max-txn-ops"


class TxnLimitTooLow(StoreError):
    """The etcd refuses transactions as large as the ones its user needs."""


async def check_txn_ops(store: Store, needed: int) -> None:
    """Raise ``TxnLimitTooLow`` (saying what to set) unless the etcd takes ``needed`` operations."""
    try:
        await store.txn([Compare(PROBE_KEY, "version", "==", 0)] * needed, [], [])
    except TxnLimitTooLow:
        raise
    except StoreError as exc:
        if "too many operations" not in str(exc):
            raise
        raise TxnLimitTooLow(
            f"etcd refuses a transaction of {needed} operations, which pitrixd may write (raise the "
            f"etcd members' --max-txn-ops to at least {needed}; it is 128 unless set): {exc}"
        ) from None
