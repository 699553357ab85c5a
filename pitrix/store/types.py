"""Plain values the store hands out, free of aetcd and protobuf types.

Callers (metad, the runtime) depend on these shapes only, so the etcd client library can change
without touching them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0

    @property
    def text(self) -> str:
        return self.value.decode()

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """What one etcd revision (or a resync) changed under the watched prefix.

    ``resync`` is set when the revision the watcher asked for was compacted away: ``state`` then
    holds every key under the prefix as of ``revision`` and the consumer must replace what it had.
    """

    revision: int
    events: list[WatchEvent] = field(default_factory=list)
    resync: bool = False
    state: list[KV] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: ``target`` of ``key`` ``op`` ``value``."""

    key: str
    target: Literal["value", "version", "create", "mod"]
    op: Literal["==", "!=", "<", ">"]
    value: bytes | int


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction."""

    kind: Literal["put", "delete", "delete_prefix", "get"]
    key: str
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    gets: list[KV | None] = field(default_factory=list)
