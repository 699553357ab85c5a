"""Sharing clusters between the live pitrixd replicas: who is alive, who drives what, who should.

Each replica announces itself at ``/replicas/<id>`` on its own lease (the lease its owner keys
hang on), so a dead replica vanishes from the fleet in the same etcd revision as its claims. Every
replica keeps the same view, fed by watches: the live replicas, each live cluster's owner, each
cluster's state. From that view alone each one computes the same answer to "who should claim this
unowned cluster": clusters without an owner are dealt, in id order, each to the least loaded live
replica, a tie going to the replica that scores the cluster highest (rendezvous hashing), so
replicas with the same view agree without talking, and a dead replica's clusters spread over the
others instead of landing on one.

A replica holding more than its fair share (``ceil(live clusters / live replicas)``), as the old
ones do when a replica joins, hands its surplus over between jobs: it deletes its owner key of an
idle cluster in a transaction that also requires the cluster record unchanged since it was read
idle, so an action accepted meanwhile keeps its cluster where it is. The deletion makes the cluster
an orphan that the least loaded replica (the newcomer) claims with the usual fencing. A running
job is never cut: a busy cluster is handed over after its job ends.

Views may differ for a moment (watches arrive at different times); the worst outcome is a cluster
claimed by a replica that should not have it (claims are atomic, so never by two), corrected by a
later hand-over, or a cluster nobody claims until the next sweep, which every change triggers and
which also runs every ``SWEEP_INTERVAL`` seconds as a safety net.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.runtime.actions import LIFECYCLE
from pitrix.store import Store
from pitrix.store.types import KV, WatchBatch

# The longest a replica goes without re-checking its share when nothing changes in its view.
SWEEP_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What a replica says about itself in ``/replicas/<id>``."""

    id: str
    address: str = ""
    started: float = 0.0  # when its current lease was granted (epoch seconds)
    lease: int = 0

    def dump(self) -> bytes:
        return json.dumps(
            {"id": self.id, "address": self.address, "started": self.started, "lease": self.lease}
        ).encode()

    @classmethod
    def load(cls, replica: str, value: bytes) -> ReplicaInfo:
        try:
            data = json.loads(value)
        except ValueError:
            return cls(replica)
        if not isinstance(data, dict):
            return cls(replica)
        return cls(
            replica,
            address=str(data.get("address", "")),
            started=float(data.get("started", 0.0) or 0.0),
            lease=int(data.get("lease", 0) or 0),
        )


def score(replica: str, cid: str) -> int:
    """How much ``replica`` wants ``cid`` (rendezvous hashing): the same number on every replica."""
    digest = hashlib.blake2b(f"{replica}\0{cid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def deal(orphans: Iterable[str], counts: dict[str, int]) -> dict[str, str]:
    """Each orphan (in id order) to the least loaded replica, a tie to the one scoring it highest."""
    if not counts:
        return {}
    load = dict(counts)
    dealt: dict[str, str] = {}
    for cid in sorted(orphans):
        best = min(load, key=lambda r: (load[r], -score(r, cid)))
        dealt[cid] = best
        load[best] += 1
    return dealt


def fair_share(clusters: int, replicas: int) -> int:
    """The most clusters one replica should hold: every share then lies within one of the mean."""
    return math.ceil(clusters / max(replicas, 1))


def _state_of(value: bytes) -> str:
    try:
        data = json.loads(value)
    except ValueError:
        return ""
    return str(data.get("state", "")) if isinstance(data, dict) else ""


class Fleet:
    """This replica's view of the fleet: live replicas, cluster owners and states, from etcd."""

    def __init__(self, store: Store, me: str) -> None:
        self.store = store
        self.me = me
        self.replicas: dict[str, ReplicaInfo] = {}
        self.owners: dict[str, str] = {}
        self.states: dict[str, str] = {}  # live clusters (not deleted) and their state
        self.changed = asyncio.Event()  # set on every change of the view: the sweep's cue
        self.released: set[str] = set()  # live clusters whose owner key was seen going away
        self._version = 0
        self._dealt: tuple[int, dict[str, str]] = (-1, {})
        self._tasks: list[asyncio.Task[None]] = []
        self.log = get_logger("pitrix.fleet", replica=me)

    # -- feeding the view ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the whole view, then follow each part from just after the revision it was read at."""
        sources = ((keys.REPLICAS, self._replica), (keys.OWNERS, self._owner), (keys.CLUSTERS, self._cluster))
        for prefix, apply in sources:
            kvs, revision = await self.store.get_prefix(prefix)
            self._replace(prefix, kvs)
            follow = self._follow(prefix, revision + 1, apply)
            self._tasks.append(asyncio.create_task(follow, name=f"fleet{prefix.rstrip('/')}"))
        self._touch()

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    def _replace(self, prefix: str, kvs: list[KV]) -> None:
        if prefix == keys.REPLICAS:
            self.replicas.clear()
        elif prefix == keys.OWNERS:
            self.owners.clear()
        else:
            self.states.clear()
        apply = {keys.REPLICAS: self._replica, keys.OWNERS: self._owner, keys.CLUSTERS: self._cluster}[prefix]
        for kv in kvs:
            apply(kv.key, kv.value)

    def _replica(self, key: str, value: bytes | None) -> None:
        replica = key.removeprefix(keys.REPLICAS)
        if not replica or "/" in replica:
            return
        if value is None:
            self.replicas.pop(replica, None)
        else:
            self.replicas[replica] = ReplicaInfo.load(replica, value)

    def _owner(self, key: str, value: bytes | None) -> None:
        parsed = keys.parse(key)
        if parsed is None or parsed.kind != "owner":
            return
        cid = parsed.cluster_id
        if value is None:
            if self.owners.pop(cid, None) is not None and cid in self.states:
                self.released.add(cid)
        else:
            self.owners[cid] = value.decode(errors="replace")
            self.released.discard(cid)

    def _cluster(self, key: str, value: bytes | None) -> None:
        parsed = keys.parse(key)
        if parsed is None or parsed.kind != "cluster":
            return
        state = _state_of(value) if value is not None else "deleted"
        if state == "deleted":
            self.states.pop(parsed.cluster_id, None)
        else:
            self.states[parsed.cluster_id] = state

    async def _follow(self, prefix: str, revision: int, apply: Any) -> None:
        async for batch in self._batches(prefix, revision):
            if batch.resync:
                self._replace(prefix, batch.state)
            for event in batch.events:
                apply(event.key, event.value if event.type == "put" else None)
            self._touch()

    async def _batches(self, prefix: str, revision: int) -> AsyncIterator[WatchBatch]:
        while True:
            try:
                async for batch in self.store.watch_prefix(prefix, revision):
                    revision = batch.revision + 1
                    yield batch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.store.closed:
                    return
                self.log.warning("fleet watch broken; resuming", prefix=prefix, error=str(exc))
                await asyncio.sleep(SWEEP_INTERVAL)

    def _touch(self) -> None:
        self._version += 1
        self.changed.set()

    def held(self, cid: str) -> None:
        """This replica claimed ``cid`` (its watch will say so too; the count is right at once)."""
        if self.owners.get(cid) != self.me:
            self.owners[cid] = self.me
            self._touch()

    def take_released(self, cid: str) -> bool:
        """Whether ``cid`` had an owner that let it go (died, handed it over), as opposed to none
        (a claim of it is a move); asked once per release."""
        if cid in self.released:
            self.released.discard(cid)
            return True
        return False

    def place(self, cid: str, my_lease: int) -> tuple[str, int]:
        """Which replica a new cluster belongs to from its first moment, and the lease its owner
        key goes on: this one (which accepted the create) while it is among the least loaded, else
        the least loaded by the same deal as orphans."""
        counts = self.counts()
        if counts[self.me] <= min(counts.values()):
            return self.me, my_lease
        chosen = deal([cid], counts).get(cid, self.me)
        info = self.replicas.get(chosen)
        if chosen == self.me or info is None or not info.lease:
            return self.me, my_lease
        return chosen, info.lease

    def placed(self, cid: str, replica: str) -> None:
        """A create this replica accepted put ``cid`` on ``replica``: counted at once."""
        self.states.setdefault(cid, "creating")
        if self.owners.get(cid) != replica:
            self.owners[cid] = replica
            self._touch()

    def let_go(self, cid: str) -> None:
        if self.owners.get(cid) == self.me:
            del self.owners[cid]
            self._touch()

    # -- reading the view ---------------------------------------------------------------------------

    def live(self) -> list[str]:
        """Live replicas' ids (this one always among them: it may not have seen its own record yet)."""
        return sorted(set(self.replicas) | {self.me})

    def counts(self) -> dict[str, int]:
        """Live clusters each live replica holds."""
        counts = dict.fromkeys(self.live(), 0)
        for cid, owner in self.owners.items():
            if owner in counts and cid in self.states:
                counts[owner] += 1
        return counts

    def orphans(self) -> list[str]:
        return [cid for cid in self.states if cid not in self.owners]

    def dealt(self) -> dict[str, str]:
        """Who should claim each orphan, as every replica with this view computes it."""
        version, dealt = self._dealt
        if version != self._version:
            dealt = deal(self.orphans(), self.counts())
            self._dealt = (self._version, dealt)
        return dealt

    def should_claim(self, cid: str) -> bool:
        """Whether this replica is the one to claim ``cid`` if nobody holds it: the fleet deals it
        here, and this replica holds less than its fair share counting ``cid`` (a replica whose
        view of the others lags would otherwise take clusters it must hand over again)."""
        owner = self.owners.get(cid)
        if owner is not None:
            return owner == self.me
        counts = self.counts()
        dealt = self.dealt()
        if cid in dealt:
            if dealt[cid] != self.me:
                return False
        elif deal([cid], counts).get(cid) != self.me:  # a create just accepted here: not in the view yet
            return False
        total = len(self.states) + (cid not in self.states)
        return len(self.live()) == 1 or counts[self.me] < fair_share(total, len(self.live()))

    def fair_share(self) -> int:
        return fair_share(len(self.states), len(self.live()))

    def below_share(self) -> bool:
        """Whether this replica may claim one more cluster (it holds less than its fair share)."""
        return len(self.live()) == 1 or self.counts()[self.me] < self.fair_share()

    def surplus(self) -> int:
        """How many clusters this replica holds beyond its fair share."""
        return max(0, self.counts()[self.me] - self.fair_share())

    def mine(self) -> list[str]:
        return [cid for cid, owner in self.owners.items() if owner == self.me and cid in self.states]

    def handover_order(self) -> list[str]:
        """This replica's clusters, the ones it wants least first (its surplus goes in this order)."""
        return sorted(self.mine(), key=lambda cid: score(self.me, cid))

    def info(self, lease: int, address: str, started: float) -> ReplicaInfo:
        return ReplicaInfo(self.me, address=address, started=started, lease=lease)

    def busy(self) -> dict[str, int]:
        """Live clusters in a transitional state (a job running or queued) each replica holds."""
        busy = dict.fromkeys(self.live(), 0)
        for cid, owner in self.owners.items():
            state = self.states.get(cid)
            if owner in busy and state and LIFECYCLE.is_transitional(state):
                busy[owner] += 1
        return busy


def lease_age(info: ReplicaInfo, now: float | None = None) -> float:
    return max(0.0, (now if now is not None else time.time()) - info.started) if info.started else 0.0
