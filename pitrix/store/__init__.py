"""The etcd store: every piece of state that must survive a crash goes through here."""

from pitrix.store.client import Store, StoreError
from pitrix.store.types import KV, Compare, Op, TxnResult, WatchBatch, WatchEvent

__all__ = ["KV", "Compare", "Op", "Store", "StoreError", "TxnResult", "WatchBatch", "WatchEvent"]
