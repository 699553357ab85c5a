"""One etcd watch per process feeding an in-memory copy of the keyspace.

Reads answer from the copy at its revision, so a thousand agents polling cost etcd nothing; the
copy also keeps the source-IP identity index and releases the long-poll waiters a batch concerns.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections.abc import Callable

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.metad import keyspace
from pitrix.metad.selfview import Mapping
from pitrix.metad.tree import Tree, split_path
from pitrix.metad.waiters import WaiterIndex
from pitrix.store import Store, WatchBatch
from pitrix.store.watch import follow

# A management write waiting this long on a mirror that applied nothing meanwhile: the watch is
# taken for stalled and re-created from the last applied revision.
STALL_AFTER = 1.0


class Mirror:
    def __init__(
        self,
        store: Store,
        prune_after: int = 10000,
        on_gone: Callable[[str], None] | None = None,
        stall_after: float = STALL_AFTER,
    ) -> None:
        self.store = store
        self.stall_after = stall_after
        # Told the id of every instance whose mapping goes away, so what is kept per instance
        # elsewhere (its heartbeat lease) does not outlive it.
        self.on_gone = on_gone
        # Deleted keys stay in the tree as tombstones (they date deletions for long-polls); after
        # this many deletions they are swept and the mirror's known history starts afresh.
        self.prune_after = prune_after
        self._deletes = 0
        self.watch_error: str | None = None
        self.tree = Tree()
        self.revision = 0
        # Below this revision the mirror has no history (it loaded a snapshot): a caller asking
        # "changed since N" with N older than the snapshot is answered at once.
        self.base_revision = 0
        self.waiters = WaiterIndex()
        self.mappings: dict[str, Mapping] = {}
        self.by_ip: dict[str, str] = {}
        self.by_token: dict[str, str] = {}  # bootstrap token sha256 -> instance id
        # Bumped by every batch that may change who a caller is (keyspace.decides_identity):
        # an identification made at an unchanged epoch still holds and need not be redone.
        self.identity_epoch = 0
        # Bumped by every batch that writes a cluster's links (keyspace.decides_links): with the
        # identity epoch, the paths a caller's view depends on (selfview.dependencies) are the same
        # for as long as both stand.
        self.links_epoch = 0
        # Bumped by every change to the tree: what is computed from the tree at one generation
        # (render.SharedSections) holds for as long as the generation stands.
        self.generation = 0
        # (revision, tie-breaker, future) of management writes waiting for the mirror to catch up.
        self._catching_up: list[tuple[int, int, asyncio.Future[None]]] = []
        self._catch_seq = 0
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._progress_at = 0.0  # loop time of the last batch applied or of the watch's (re)start
        self.watch_restarts = 0
        self._log = get_logger("pitrix.metad.mirror")

    async def start(self) -> None:
        kvs, revision = await self.store.get_prefix("/")
        for kv in kvs:
            self.tree.put(kv.key, kv.value.decode(errors="replace"), kv.mod_revision)
        self.revision = self.base_revision = revision
        self._reindex_all()
        self.identity_epoch += 1
        self.links_epoch += 1
        self.generation += 1
        self._log.info("mirror loaded", keys=len(kvs), revision=revision)
        self._running = True
        self._start_watch()

    def _start_watch(self) -> None:
        self._progress_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._follow(self.revision + 1), name="metad-mirror")

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self.waiters.notify_all(self.revision)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self.watch_error is None

    async def _follow(self, from_revision: int) -> None:
        """Apply every batch from ``from_revision`` on, for as long as metad runs; should the
        watch break, reads keep answering from the mirror as it is while it resumes."""
        await follow(self.store, "/", from_revision, self._apply_live, on_broken=self._broken)

    async def _apply_live(self, batch: WatchBatch) -> None:
        await self.apply(batch)
        self.watch_error = None
        self._progress_at = asyncio.get_running_loop().time()

    def _broken(self, error: Exception, retry_in: float) -> None:
        self.watch_error = str(error) or type(error).__name__
        self._log.error("mirror watch failed; resuming", error=self.watch_error, retry_in=round(retry_in, 3))

    async def apply(self, batch: WatchBatch) -> None:
        self.generation += 1
        if batch.resync:
            tree = Tree()
            for kv in batch.state:
                tree.put(kv.key, kv.value.decode(errors="replace"), kv.mod_revision)
            self.tree = tree
            self._deletes = 0
            self.revision = self.base_revision = batch.revision
            self._reindex_all()
            self.identity_epoch += 1
            self.links_epoch += 1
            self._log.warning("mirror resynced", revision=batch.revision, keys=len(batch.state))
            self.waiters.notify_all(batch.revision)
        else:
            touched: set[str] = set()
            identity_changed = links_changed = False
            for event in batch.events:
                if event.type == "put":
                    self.tree.put(event.key, event.value.decode(errors="replace"), event.revision)
                else:
                    self.tree.delete(event.key, event.revision)
                    self._deletes += 1
                parts = split_path(event.key)
                iid = keyspace.mapped_instance(parts)
                if iid is not None:
                    touched.add(iid)
                if not identity_changed and keyspace.decides_identity(parts):
                    identity_changed = True
                if not links_changed and keyspace.decides_links(parts):
                    links_changed = True
            if identity_changed:
                self.identity_epoch += 1
            if links_changed:
                self.links_epoch += 1
            self.revision = max(self.revision, batch.revision)
            for iid in touched:
                self._reindex(iid)
            self.waiters.notify((event.key for event in batch.events), self.revision)
            if self._deletes >= self.prune_after:
                self.prune()
        while self._catching_up and self._catching_up[0][0] <= self.revision:
            _, _, future = heapq.heappop(self._catching_up)
            if not future.done():
                future.set_result(None)

    def prune(self) -> int:
        """Sweep tombstones; callers asking about revisions before now get an immediate answer."""
        removed = self.tree.prune()
        self.generation += 1
        self._deletes = 0
        self.base_revision = self.revision
        self._log.info("mirror pruned", nodes=removed, revision=self.revision)
        return removed

    async def wait_for_revision(self, revision: int, timeout: float = 5.0) -> bool:
        """Block until the mirror has applied ``revision`` (read-your-writes for the management API).

        The write is known committed, so a mirror that applies nothing at all while it waits has a
        watch that stopped delivering (a stream left open but silent after its etcd restarted was
        seen): the watch is re-created from the last applied revision, which loses and repeats
        nothing, rather than leaving every later write to time out.
        """
        if self.revision >= revision:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._catch_seq += 1
        heapq.heappush(self._catching_up, (revision, self._catch_seq, future))
        deadline = loop.time() + timeout
        try:
            while not future.done():
                left = deadline - loop.time()
                if left <= 0:
                    self._log.warning("mirror lags", wanted=revision, have=self.revision)
                    return False
                await asyncio.wait({future}, timeout=min(left, self.stall_after))
                if not future.done():
                    self._unstall(revision)
            return True
        finally:
            future.cancel()  # a no-op once answered; otherwise the heap skips it

    def _unstall(self, wanted: int) -> None:
        """Re-create the watch if nothing was applied for ``stall_after`` seconds (once for all the
        writes waiting on it: the restart itself counts as progress)."""
        now = asyncio.get_running_loop().time()
        if not self._running or self.revision >= wanted or now - self._progress_at < self.stall_after:
            return
        self._log.warning(
            "mirror watch stalled; re-creating it",
            wanted=wanted,
            have=self.revision,
            idle=round(now - self._progress_at, 3),
        )
        self._progress_at = now
        self.watch_restarts += 1
        # The new watch starts once the old one has ended (never two applying at once), in a task
        # of its own: a waiting write whose client goes away must not take the restart with it.
        old = self._task
        self._task = asyncio.create_task(self._refollow(old), name="metad-mirror")

    async def _refollow(self, old: asyncio.Task[None] | None) -> None:
        if old is not None:
            await cancel_and_wait(old)
        await self._follow(self.revision + 1)

    # -- identity ---------------------------------------------------------------------------------

    def _reindex_all(self) -> None:
        before = set(self.mappings)
        self.mappings.clear()
        self.by_ip.clear()
        self.by_token.clear()
        root = self.tree.live(keyspace.MAPPINGS)
        if root is not None:
            for iid, _ in root.live_children():
                self._reindex(iid)
        for iid in before - self.mappings.keys():
            self._gone(iid)

    def _reindex(self, iid: str) -> None:
        old = self.mappings.pop(iid, None)
        if old is not None and self.by_ip.get(old.ip) == iid:
            del self.by_ip[old.ip]
        if old is not None and self.by_token.get(old.bootstrap_sha256) == iid:
            del self.by_token[old.bootstrap_sha256]
        mapping = Mapping.from_node(iid, self.tree.live(keyspace.mapping(iid)))
        if mapping is not None:
            self.mappings[iid] = mapping
            self.by_ip[mapping.ip] = iid
            if mapping.bootstrap_sha256:
                self.by_token[mapping.bootstrap_sha256] = iid
        elif old is not None:
            self._gone(iid)

    def _gone(self, iid: str) -> None:
        if self.on_gone is not None:
            try:
                self.on_gone(iid)
            except Exception:
                self._log.exception("instance cleanup failed", instance_id=iid)

    def identify(self, ip: str | None) -> Mapping | None:
        """The mapping of the instance whose address is ``ip``."""
        if not ip:
            return None
        iid = self.by_ip.get(ip)
        return self.mappings.get(iid) if iid is not None else None

    def by_bootstrap_token(self, token: str) -> Mapping | None:
        """The mapping whose bootstrap token this is (only its hash is ever stored)."""
        iid = self.by_token.get(hashlib.sha256(token.encode()).hexdigest())
        return self.mappings.get(iid) if iid is not None else None

    def changed_since(self, deps: list[str], revision: int) -> bool:
        if revision < self.base_revision:
            return True
        if revision >= self.revision:
            # Nothing in the tree is newer than the mirror: an agent polling again with the version
            # it was just answered at (the usual case) is held without looking at its dependencies.
            return False
        return any(self.tree.rev_of(dep) > revision for dep in deps)
