"""Watching the members of metadata clusters of several, and replacing one that is lost.

A member is lost when the cloud no longer runs its VM (terminated, gone, stopped) or when its
VM runs but its metad has not answered its management port for ``metadata_silence`` seconds.
One lost member of three (of five: two) leaves a quorum: it is replaced by a job of the metadata
cluster (:mod:`pitrix.runtime.metadata_replace`), one at a time, under the cluster's lock. More
lost than that and etcd can change nothing: the record's ``condition`` and the log say the quorum
is lost, and nothing is replaced; only the operator can restore it (docs/operations.md).

A ready cluster with fewer members than its runtime's ``metadata_size`` (raised since it was
made) is grown to it (:mod:`pitrix.runtime.metadata_grow`); so a cluster of one is watched too.
A member lost while a growth is under way is replaced first (the growth's job waits in etcd),
unless the growth's next member is in etcd's list already: then that member is started first,
as only it gives the cluster its quorum back.

One watch per metadata cluster, started by the recovery monitor for every active cluster it is
told of; it ends when the metadata cluster is gone. A replacement or a growth found under way
(pitrixd restarted mid-job) is resumed first.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.runtime import metadata_grow, metadata_replace
from pitrix.runtime.authority import management_client_context
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_plan import wanted_size
from pitrix.runtime.records import Cluster, MetadataCluster
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.supervisor import KeyedTasks

PROBE_TIMEOUT = 3.0  # one health check of one member's metad
FIRST_PAUSE = 0.5
MAX_PAUSE = 30.0
LOST_STATUSES = ("stopped", "suspended", "terminated", "ceased")


class MetadataMonitor:
    def __init__(self, metadata: MetadataClusters, policy: RecoveryPolicy) -> None:
        self.metadata = metadata
        self.policy = policy
        self.tasks = KeyedTasks("metadata-monitor")
        self._watching: set[tuple[str, str]] = set()  # (holder, runtime): one watch each

    def follow(self, cluster: Cluster) -> None:
        """Watch the metadata cluster serving ``cluster`` (once per owner and runtime)."""
        if self.policy.metadata:
            key = f"{cluster.owner}/{cluster.runtime}"
            self.tasks.start(key, partial(self._follow, cluster.owner, cluster.runtime))

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _follow(self, owner: str, runtime: str) -> None:
        holder = self.metadata.holder(await self.metadata.runtime(runtime), owner)
        if (holder, runtime) in self._watching:
            return  # a shared metadata cluster, watched for another owner already
        self._watching.add((holder, runtime))
        log = get_logger("pitrix.metadata.monitor", owner=holder, runtime=runtime)
        silent_since: dict[str, float] = {}
        backoff = Backoff(FIRST_PAUSE, MAX_PAUSE)
        try:
            while True:
                try:
                    if not await self.look(holder, runtime, silent_since):
                        return
                    backoff.reset()
                    pause = self.policy.metadata_interval
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    pause = backoff.next()
                    log.warning(
                        "metadata monitor interrupted; resuming",
                        error=str(exc) or type(exc).__name__,
                        retry_in=round(pause, 3),
                    )
                await asyncio.sleep(pause)
        finally:
            self._watching.discard((holder, runtime))

    async def look(self, holder: str, runtime: str, silent_since: dict[str, float]) -> bool:
        """One look at the members, and what it calls for; False once there is nothing to watch."""
        record = await self.metadata.record(holder, runtime)
        if record is None:
            return False
        if record.status != "ready":
            return True  # being made (or removed): its own plan looks after it
        log = get_logger("pitrix.metadata.monitor", owner=holder, runtime=runtime)
        if await metadata_replace.load(self.metadata, holder, runtime) is not None:
            log.warning("resuming a metadata member's replacement")
            await metadata_replace.replace(self.metadata, holder, runtime)
            silent_since.clear()
            return True
        size = wanted_size(self.metadata, await self.metadata.runtime(runtime))
        growth = await metadata_grow.load(self.metadata, holder, runtime)
        if growth is not None and (
            not record.members or await metadata_grow.added(self.metadata, record, growth)
        ):
            # Growing from one (nothing to replace), or its next member is in etcd's list already:
            # only that member's start gives the cluster its quorum back, so it is finished first.
            await self._resume_growth(holder, runtime, record, size)
            silent_since.clear()
            return True
        if growth is None and not record.members and size <= 1:
            return True  # one member: nothing to replace, nothing to grow
        lost = await self.lost(record, silent_since)
        if lost and not record.members:
            return True  # a lost single member is made again by the next ensure; grown after
        wanted, size = size, 1 + len(record.members)
        if not lost:
            if growth is not None:
                await self._resume_growth(holder, runtime, record, wanted)
                silent_since.clear()
            elif size < wanted:  # the runtime's metadata_size was raised: every member answers
                await self._grow(holder, runtime, record, wanted)
                silent_since.clear()
            elif record.condition:
                await metadata_replace.set_condition(self.metadata, holder, runtime, "")
            return True
        if len(lost) > (size - 1) // 2:
            names = ", ".join(f"{metadata_replace.slot_vm(record, s)[0]} ({why})" for s, why in lost)
            message = (
                f"quorum lost: {len(lost)} of {size} metadata members lost ({names}); nothing is "
                "replaced automatically: the operator must restore the members (docs/operations.md)"
            )
            log.error("metadata quorum lost", lost=[why for _, why in lost], size=size)
            if record.condition != message:
                await metadata_replace.set_condition(self.metadata, holder, runtime, message)
            return True
        slot, reason = lost[0]
        if growth is not None:
            # Its next member is not in etcd's list yet, and etcd would not add it with a member
            # lost (or, added, it would count against a quorum already short): the growth waits,
            # its job kept in etcd, while the lost member is replaced; the next look resumes it.
            log.warning("metadata growth paused: a lost member is replaced first", slot=slot, reason=reason)
        await metadata_replace.replace(self.metadata, holder, runtime, slot, reason)
        silent_since.clear()
        return True

    async def _resume_growth(self, holder: str, runtime: str, record: MetadataCluster, size: int) -> None:
        log = get_logger("pitrix.metadata.monitor", owner=holder, runtime=runtime)
        log.warning("resuming a metadata cluster's growth", condition=record.condition)
        if not record.condition.startswith(metadata_grow.GROWING):  # a replacement said its own meanwhile
            said = metadata_grow.growing(record, size)
            await metadata_replace.set_condition(self.metadata, holder, runtime, said)
        await metadata_grow.grow(self.metadata, holder, runtime, size)

    async def _grow(self, holder: str, runtime: str, record: MetadataCluster, size: int) -> None:
        log = get_logger("pitrix.metadata.monitor", owner=holder, runtime=runtime)
        log.warning(metadata_grow.growing(record, size))
        await metadata_grow.grow(self.metadata, holder, runtime, size)

    async def lost(self, record: MetadataCluster, silent_since: dict[str, float]) -> list[tuple[int, str]]:
        """The lost members' slots, each with why: its VM not running, or its metad silent past
        ``metadata_silence`` (``silent_since`` keeps since when, between looks)."""
        slots = [metadata_replace.slot_vm(record, s) for s in range(1 + len(record.members))]
        provider = await self.metadata.provider_for(record.runtime)
        ids = [instance_id for _, instance_id, _ in slots if instance_id]
        found = {i.instance_id: i for i in await provider.describe_instances(instance_ids=ids)}
        context = management_client_context(record.issuer_cert_pem, await self.metadata.management())
        now = time.monotonic()
        lost: list[tuple[int, str]] = []
        for slot, (name, instance_id, ip) in enumerate(slots):
            instance = found.get(instance_id)
            if instance is None or instance.status in LOST_STATUSES:
                lost.append((slot, f"VM {instance_id or name} is {instance.status if instance else 'gone'}"))
                continue
            if await metadata_replace.answers(f"https://{ip}:9611", context, PROBE_TIMEOUT):
                silent_since.pop(name, None)
                continue
            since = silent_since.setdefault(name, now)
            if now - since >= self.policy.metadata_silence:
                lost.append((slot, f"metad at {ip} silent for {now - since:.0f}s"))
        return lost
