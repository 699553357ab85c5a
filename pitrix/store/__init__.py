"""The etcd store: every piece of state that must survive a crash goes through here."""

from pitrix.store.client import RevisionCompacted, Store, StoreError, StoreUnavailable
from pitrix.store.lease import KeptLease
from pitrix.store.lock import Election, Lock
from pitrix.store.types import KV, Compare, Op, TxnResult, WatchBatch, WatchEvent

__all__ = [
    "KV",
    "Compare",
    "Election",
    "KeptLease",
    "Lock",
    "Op",
    "RevisionCompacted",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
]
