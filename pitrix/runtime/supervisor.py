"""Generic supervision: one task per cluster, a bounded number of jobs at once, stop within a bound.

It knows nothing of lifecycles or plans: it runs what it is given for a cluster, once at a time,
and lets a job that must wait for a free slot say so (``on_queued``). The rules (what a job is,
how it ends) live in ``jobs.py``; the recovery monitor uses the same per-cluster tasks.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from pitrix.logs import get_logger

# Jobs one replica runs at once. Beyond some hundreds, every job's steps share the same cores
# and each one's deadlines (an agent's first heartbeat within 120 s) measure the crowd instead
# of the cluster: 1,000 creates at once on a 2-core host failed 621 on heartbeats that way.
# Waiting jobs stay in etcd as they were accepted and start in turn, oldest claim first.
DEFAULT_MAX_JOBS = 100
# How long stopping waits for cancelled tasks to end; a task still running then is abandoned
# (its job resumes from the journal wherever the cluster is driven next).
STOP_GRACE = 5.0

Run = Callable[[str], Awaitable[object]]
# Called when a cluster's job has to wait for a slot; returns what to call (with the seconds
# waited) once the slot is taken, or None.
Queued = Callable[[str], Awaitable[Callable[[float], Awaitable[None]] | None]]


class KeyedTasks:
    """At most one running task per key; the finished ones forget themselves."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.log = get_logger("pitrix.supervisor")

    def get(self, key: str) -> asyncio.Task[None] | None:
        return self._tasks.get(key)

    def running(self, key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def start(self, key: str, work: Callable[[], Awaitable[object]]) -> bool:
        """Run ``work()`` for ``key`` unless a task for it is running already."""
        if self.running(key):
            return False

        async def body() -> None:
            await work()

        task = asyncio.create_task(body(), name=f"{self.name}-{key}")
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._ended, key))
        return True

    def _ended(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            self.log.error(f"{self.name} task failed", key=key, error=repr(task.exception()))

    def cancel(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def count(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.done())

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Cancel every task and wait up to ``grace`` seconds for them to end."""
        tasks = [t for t in self._tasks.values() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            self.log.warning(
                f"{self.name} tasks still running after stop; abandoned",
                tasks=sorted(t.get_name() for t in pending),
                grace=grace,
            )


class Supervisor:
    """Runs each cluster's job in its own task, at most ``max_jobs`` at once."""

    def __init__(self, run: Run, max_jobs: int = DEFAULT_MAX_JOBS, on_queued: Queued | None = None) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs: must be at least 1, not {max_jobs}")
        self.run = run
        self.max_jobs = max_jobs
        self.on_queued = on_queued
        self.tasks = KeyedTasks("supervisor")
        self._slots = asyncio.Semaphore(max_jobs)
        self.log = get_logger("pitrix.supervisor")

    def busy(self, cid: str) -> bool:
        return self.tasks.running(cid)

    def supervise(self, cid: str) -> None:
        """Drive ``cid``'s job unless it is being driven; the job is read when its turn comes
        (a job waiting for a slot may have been replaced by a newer one meanwhile)."""
        self.tasks.start(cid, functools.partial(self._in_turn, cid))

    async def _in_turn(self, cid: str) -> None:
        if not self._slots.locked():
            async with self._slots:  # free: taken at once, nothing to say
                await self.run(cid)
            return
        self.log.info("job waits for a slot", cluster_id=cid, running=self.max_jobs)
        taken = await self.on_queued(cid) if self.on_queued is not None else None
        began = time.monotonic()
        async with self._slots:
            if taken is not None:
                await taken(time.monotonic() - began)
            await self.run(cid)

    def running(self) -> int:
        return self.tasks.count()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        await self.tasks.stop(grace)
