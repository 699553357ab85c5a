"""The agent's life: apply rounds, the watch loop, heartbeats and lifecycle commands.

One round reads every value the resources (and the command slot) need in a single backend call,
re-applies the resources whose values changed (all of them in interval mode, as confd), reports
what it did, and then hands the current lifecycle command to the runner, so a command always runs
against configuration that is already applied. The watch loop never gives up on the backend:
errors are logged and retried with capped exponential backoff, jittered (pitrix.backoff): when
metad restarts, its thousand agents must not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from pitrix.agent.backends import Backend, select
from pitrix.agent.commands import CommandLedger, CommandRunner, command_from_values
from pitrix.agent.confdir import ConfDir
from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import AgentError, BusyError
from pitrix.agent.health import HealthChecker, health_from_values
from pitrix.agent.log import get_logger
from pitrix.agent.monitor import MonitorRunner, monitor_from_values
from pitrix.agent.render import TemplateCache
from pitrix.agent.report import Reporter
from pitrix.agent.resource import ApplyOptions, ApplyResult, TemplateResource
from pitrix.backoff import Backoff, after_at_least, jittered
from pitrix.metad import keyspace

BACKOFF_START = 0.5
# Capped low: at boot an agent usually starts before pitrixd has registered its mapping, and
# every second it waits after that is a second added to the cluster's creation.
BACKOFF_MAX = 5.0
# How long a stopping agent tries to deliver an applied report it still owes.
STOP_REPORT_SECONDS = 3.0
# A Retry-After of 0 (or one rounded down) still waits this long before the beat is sent again.
MIN_BUSY_PAUSE = 0.5


class Agent:
    """Owns the backend, the template cache, the last applied values and the command runner."""

    def __init__(
        self,
        config: AgentConfig,
        backend: Backend,
        reporter: Reporter,
        *,
        announce: Callable[[dict[str, Any]], None] | None = None,
        own_process: bool = False,
    ) -> None:
        self.config = config
        self.backend = backend
        self.reporter = reporter
        self.cache = TemplateCache.for_config(config)
        self.confdir = ConfDir(config)
        self.options = ApplyOptions.from_config(config, file_io_on_loop=own_process)
        self.results: dict[str, ApplyResult] = {}
        self.revision = 0
        self.rounds = 0
        self.round_failures = 0
        self.coalesced = 0  # changes folded into a round by the quiescence window
        self._applied_values: dict[str, dict[str, str]] = {}
        # The newest applied report metad has not acknowledged (None once it has): kept and sent
        # again after the next heartbeat that goes through, so an outage of the metadata store
        # does not leave the runtime waiting for a report of a change the agent long since applied.
        self.unreported: tuple[int, dict[str, dict[str, Any]]] | None = None
        self._report_lock = asyncio.Lock()  # one report at a time: a stale one never lands last
        # Applied reports are spaced ``report_interval`` apart once ``run_forever`` runs their
        # sender: when the last one went out (loop time) and whether a later one is owed.
        self.reports_sent = 0
        self._reported_at = -math.inf
        self._report_owed = asyncio.Event()
        self._spacing = False
        self._deferred = False  # the newest report was held back and not tried yet
        self._applying = False  # a round is under way (from its read to its end)
        self._announce = announce or _print_ready
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._round_done = asyncio.Condition()
        self._commands_enabled = config.run_commands and not config.onetime
        self.runner: CommandRunner | None = None
        if self._commands_enabled:
            self.runner = CommandRunner(CommandLedger(config.state_dir), reporter, config.root)
        # Health checks run in the long-running modes only, as lifecycle commands do.
        self.health: HealthChecker | None = None if config.onetime else HealthChecker(reporter, config.root)
        self.monitor: MonitorRunner | None = None if config.onetime else MonitorRunner(reporter, config.root)
        self._log = get_logger("pitrix.agent", backend=config.backend, prefix=config.prefix)
        # The appcenter profile's metadata proxy, once it listens (``metadata_proxy.serve``).
        self.proxy_started: asyncio.Future[Any] | None = None

    # -- one round -------------------------------------------------------------------------------

    def _watch_keys(self, resources: list[TemplateResource]) -> list[str]:
        keys = {k for r in resources for k in r.keys}
        if self._commands_enabled:
            keys.add(f"{self.config.prefix}/{keyspace.CMD}")
        if self.health is not None:
            keys.add(f"{self.config.prefix}/{keyspace.HEALTH}")
        if self.monitor is not None:
            keys.add(f"{self.config.prefix}/{keyspace.MONITOR}")
        return sorted(keys)

    async def apply_round(self, *, only_changed: bool, hooks: RoundHooks | None = None) -> bool:
        """Fetch, apply, report. Returns whether every resource is ok. Backend errors propagate.

        ``hooks`` (the watch loop's) hear when the values are read and when the resources are
        applied, so the watch for the next change runs while this round applies.
        """
        self._applying = True
        try:
            return await self._apply_round(only_changed, hooks)
        finally:
            self._applying = False

    async def _apply_round(self, only_changed: bool, hooks: RoundHooks | None) -> bool:
        resources, load_errors = self.confdir.load()
        keys = self._watch_keys(resources)
        values = await self.backend.get_values(keys) if keys else {}
        revision = self.backend.revision
        if hooks is not None:
            hooks.read(revision, keys)
        for name, error in load_errors.items():
            self._log.error("resource not loaded", resource=name, error=error)
            self.results[name] = ApplyResult(name, ok=False, error=error)
        known = {r.name for r in resources} | set(load_errors)
        for name in list(self.results):
            if name not in known:
                del self.results[name]
                self._applied_values.pop(name, None)
        for resource in resources:
            mine = select(values, resource.keys)
            previous = self.results.get(resource.name)
            if (
                only_changed
                and previous is not None
                and previous.ok
                and self._applied_values.get(resource.name) == mine
            ):
                continue
            result = await resource.process(
                values, self.cache, self.options, before_reload=hooks.applied if hooks else None
            )
            self.results[resource.name] = result
            if result.ok:
                self._applied_values[resource.name] = mine
            else:
                self._applied_values.pop(resource.name, None)
        self.revision = revision
        if hooks is not None:
            hooks.applied()
        await self._report_applied()
        if self.runner is not None:
            self.runner.offer(command_from_values(values, self.config.prefix, self.config.command_timeout))
        if self.health is not None:
            self.health.offer(*health_from_values(values, self.config.prefix, self.config))
        if self.monitor is not None:
            self.monitor.offer(*monitor_from_values(values, self.config.prefix))
        self.rounds += 1
        self._applying = False
        async with self._round_done:
            self._round_done.notify_all()
        return all(r.ok for r in self.results.values())

    async def _report_applied(self) -> None:
        """Report this round's results: at once, unless the last report went out less than
        ``report_interval`` ago; then the sender (``_spaced_reports``) sends the newest when the
        interval is up, so a stream of changes costs one report per interval, not one per change
        (each is a request to metad and a write to etcd: a quarter of a change's CPU in all).
        A lone change is reported as soon as it is applied, as always."""
        self.unreported = (self.revision, {name: r.record() for name, r in sorted(self.results.items())})
        since = asyncio.get_running_loop().time() - self._reported_at
        if self._spacing and since < self.config.report_interval:
            self._deferred = True
            self._report_owed.set()
            return
        await self._send_unreported()

    async def _spaced_reports(self) -> None:
        """Send the report a round left owed once ``report_interval`` has passed since the last."""
        loop = asyncio.get_running_loop()
        while True:
            await self._report_owed.wait()
            self._report_owed.clear()
            delay = self._reported_at + self.config.report_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # a rate limit, not a wait for an event
            # Waiters hear of it now, unless a round is applying: they hear at its end, never
            # halfway through it (a file swapped, its reload not yet run).
            if await self._send_unreported() and not self._applying:
                async with self._round_done:
                    self._round_done.notify_all()

    async def _flush_report(self) -> None:
        """At stop: a report held back by the spacing and not tried yet, if metad takes it within
        a few seconds (one that failed waits for the next start, as it always has)."""
        if self.unreported is None or not self._deferred:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_REPORT_SECONDS):
                await self._send_unreported()

    async def _send_unreported(self) -> bool:
        """Send the newest unacknowledged applied report, if any; False when it failed (it stays
        pending). Reports go one at a time and each sends the newest: a retry of an old report
        racing a new round's report could otherwise overwrite the newer one at metad."""
        async with self._report_lock:
            pending = self.unreported
            if pending is None:
                return True
            self._reported_at = asyncio.get_running_loop().time()
            self._deferred = False
            self.reports_sent += 1
            try:
                await self.reporter.applied(*pending)
            except AgentError as exc:
                self._log.warning("applied report failed; resent after a heartbeat", error=str(exc))
                return False
            if self.unreported is pending:
                self.unreported = None
            return True

    async def wait_rounds(self, count: int) -> None:
        """Until ``count`` rounds have completed in total (for embedding and tests)."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= count)

    async def wait_round_failures(self, count: int) -> None:
        """Until ``count`` rounds have failed on the backend (for embedding and tests)."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.round_failures >= count)

    async def wait_health_checks(self, count: int) -> None:
        """Until ``count`` health checks have run and been reported (for embedding and tests)."""
        assert self.health is not None, "no health checks in -onetime mode"
        await self.health.wait_checks(count)

    # -- modes -----------------------------------------------------------------------------------

    async def run_onetime(self) -> bool:
        """confd's -onetime: one round over every resource; False when anything failed."""
        try:
            return await self.apply_round(only_changed=False)
        except AgentError as exc:
            self._log.error("backend error", error=str(exc))
            return False

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Release the backend (and its connections)."""
        await self.backend.close()

    async def run_forever(self) -> None:
        """Watch (or interval) mode, with heartbeats and lifecycle commands, until ``stop()``."""
        if self.runner is not None:
            await self.runner.recover()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._heartbeats(), name="heartbeat")]
        if self.config.report_interval > 0:
            tasks.append(asyncio.create_task(self._spaced_reports(), name="reports"))
            self._spacing = True
        if self.health is not None:
            tasks.append(asyncio.create_task(self.health.serve(), name="health"))
        if self.monitor is not None:
            tasks.append(asyncio.create_task(self.monitor.serve(), name="monitor"))
        if self.runner is not None:
            tasks.append(asyncio.create_task(self.runner.serve(), name="commands"))
        tasks += self._profile_tasks()
        loop = self._watch_loop() if self.config.watch else self._interval_loop()
        main = asyncio.create_task(loop, name="apply")
        stopper = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([main, stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self._spacing = False
            for task in [main, stopper, *tasks]:
                task.cancel()
            for task in [main, stopper, *tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._flush_report()

    def _profile_tasks(self) -> list[asyncio.Task[None]]:
        """The appcenter profile's metadata proxy (imported only there)."""
        if self.config.profile != "appcenter" or self.config.metadata_listen == "off":
            return []
        client = getattr(self.backend, "client", None)
        if client is None:
            self._log.warning("metadata proxy not started: it forwards to metad", backend=self.config.backend)
            return []
        from pitrix.agent.metadata_proxy import serve

        self.proxy_started = asyncio.get_running_loop().create_future()
        return [
            asyncio.create_task(serve(self.config, client, started=self.proxy_started), name="metadata-proxy")
        ]

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` unless the agent is stopped, or metad came back (a heartbeat went
        through after failing), first."""
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _round_with_retry(self, *, only_changed: bool, hooks: RoundHooks | None = None) -> None:
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        while not self._stop.is_set():
            try:
                await self.apply_round(only_changed=only_changed, hooks=hooks)
            except AgentError as exc:
                delay = backoff.next()
                self._log.warning("backend unavailable; retrying", error=str(exc), retry_in=round(delay, 3))
                self.round_failures += 1
                async with self._round_done:
                    self._round_done.notify_all()
                await self._pause(delay)
                continue
            except Exception:  # never exit the watch loop on a bug in one round: log it, retry
                delay = backoff.next()
                self._log.exception("apply round failed; retrying", retry_in=round(delay, 3))
                await self._pause(delay)
                continue
            self._announce_once()
            return

    def _announce_once(self) -> None:
        if self.rounds == 1:
            ok = all(r.ok for r in self.results.values())
            self._announce(
                {"ready": True, "revision": self.revision, "ok": ok, "resources": len(self.results)}
            )

    async def _watch_loop(self) -> None:
        hooks = RoundHooks(self)
        try:
            await self._round_with_retry(only_changed=False, hooks=hooks)
            backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
            while not self._stop.is_set():
                watch = hooks.watch()
                failed = any(not r.ok for r in self.results.values())
                # A failed resource is retried even when its values do not change again: the
                # cause (a daemon down during reload, a full disk) may well be gone by then.
                done, _ = await asyncio.wait([watch], timeout=self.config.retry_interval if failed else None)
                if not done:
                    hooks.cancel()
                    self._log.info("retrying failed resources")
                    await self._round_with_retry(only_changed=True, hooks=hooks)
                    continue
                try:
                    index = watch.result()
                except AgentError as exc:
                    delay = backoff.next()
                    self._log.warning("watch failed; retrying", error=str(exc), retry_in=round(delay, 3))
                    hooks.cancel()
                    await self._pause(delay)
                    continue
                except Exception:  # a bug must not end the watch: log it, back off, watch again
                    delay = backoff.next()
                    self._log.exception("watch failed unexpectedly; retrying", retry_in=round(delay, 3))
                    hooks.cancel()
                    await self._pause(delay)
                    continue
                backoff.reset()
                if hooks.burst:
                    # The change came while the last round was applying: a burst is under way.
                    index = await self._settle(hooks.keys, index)
                self._log.debug("change", index=index)
                hooks.resume_from(index)
                await self._round_with_retry(only_changed=True, hooks=hooks)
        finally:
            hooks.cancel()

    async def _settle(self, keys: list[str], index: int) -> int:
        """Keep watching until nothing more changed for ``quiet_period`` seconds (but no longer
        than ``max_settle`` in all), so a burst of writes costs one round and one reload instead
        of one per write.

        Only a change that came while the last round was applying waits here: a change that finds
        the agent idle is applied at once (a lone change, or a writer that waits for each apply
        before the next write, pays no delay), the rest of its burst is gathered into the next
        round. The index returned is the newest change seen; the round that follows reads
        everything up to at least it, and the next watch resumes from what that read reflects, so
        nothing in or after the burst is missed.
        """
        quiet = self.config.quiet_period
        if quiet <= 0:
            return index
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_settle
        while not self._stop.is_set():
            remaining = min(quiet, deadline - loop.time())
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    index = await self.backend.watch(self.config.prefix or "/", keys, index)
            except TimeoutError:
                break
            except AgentError as exc:  # the round that follows retries the backend with backoff
                self._log.debug("settle watch failed", error=str(exc))
                break
            self.coalesced += 1
        return index

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds after some round or a late applied report (for embedding
        and tests)."""
        async with self._round_done:
            await self._round_done.wait_for(predicate)

    async def _interval_loop(self) -> None:
        while not self._stop.is_set():
            await self._round_with_retry(only_changed=False)
            await self._pause(self.config.interval)

    async def _heartbeats(self) -> None:
        failing = False
        while True:
            pause = self.config.heartbeat_interval
            try:
                await self.reporter.heartbeat()
            except BusyError as exc:
                pause = heartbeat_pause(exc, self.config.heartbeat_interval)
                self._log.info("heartbeat deferred: metad busy", retry_in=round(pause, 3))
                failing = True
            except AgentError as exc:
                pause = heartbeat_pause(exc, self.config.heartbeat_interval)
                self._log.warning("heartbeat failed", error=str(exc), retry_in=round(pause, 3))
                failing = True
            except Exception:
                self._log.exception("heartbeat failed unexpectedly")
            else:
                if failing:
                    failing = False
                    self._wake.set()
                pending = self.unreported
                if pending is not None and await self._send_unreported():
                    self._log.info("pending applied report delivered", revision=pending[0])
                    async with self._round_done:
                        self._round_done.notify_all()
                if self.runner is not None:
                    try:
                        await self.runner.flush_reports()
                    except OSError as exc:  # the state dir (disk full, removed): retried next beat
                        self._log.error("command ledger unavailable", error=str(exc))
            await asyncio.sleep(pause)


def heartbeat_pause(error: AgentError, interval: float) -> float:
    """Seconds before the beat after a failed one.

    metad refuses first beats (``BusyError``) when too many come at once: asked again no sooner
    than its ``Retry-After``, and not all together (every agent of a burst was refused in the
    same second). Any other failure is asked again within the interval (the lease lasts three),
    but not in step with every agent that failed at the same moment.
    """
    if isinstance(error, BusyError):
        return after_at_least(max(error.retry_after, MIN_BUSY_PAUSE))
    return jittered(interval)


class RoundHooks:
    """The watch loop's view of a round: the watch for the next change starts as soon as the
    round has read its values, and whether it fired before the round finished applying says
    whether the agent is in a burst.

    Why not the time since the last round: a writer that waits for each change to be applied
    before it writes the next (a deploy script, the propagation benchmark) would look like a burst
    and pay ``quiet_period`` on every write. Only a change that lands while the agent is busy
    applying is coalesced; one that finds it idle is applied at once.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._task: asyncio.Task[int] | None = None
        self.keys: list[str] = []
        self.burst = False
        self._settled = False  # whether this round's burst is decided
        self._index = 0  # where the next watch starts when the backend has no revision of its own

    def read(self, revision: int, keys: list[str]) -> None:
        """The round read values at ``revision``: watch from there while it applies them."""
        self.cancel()
        self.keys = keys
        if revision > 0:
            self._index = revision
        self._settled = False
        self.watch()

    def applied(self) -> None:
        """The round's configuration is live: its first reload command is about to run, or the
        round is over. A change that came before now came while it was applying.

        Not the end of the round: a writer that waits for the reload's own effect (a service
        answering with the new settings) writes again while the reload command is still exiting,
        and that change did not come while the agent was busy rendering.
        """
        if not self._settled:
            self._settled = True
            self.burst = self._task is not None and self._task.done()

    def resume_from(self, index: int) -> None:
        self._index = index

    def watch(self) -> asyncio.Task[int]:
        """The watch for the change after the last round (started now if it is not running yet)."""
        if self._task is None:
            agent = self._agent
            self._task = asyncio.ensure_future(
                agent.backend.watch(agent.config.prefix or "/", self.keys, self._index)
            )
        return self._task

    def cancel(self) -> None:
        task, self._task = self._task, None
        self.burst = False
        if task is not None and not task.done():
            task.cancel()


def build_agent(
    config: AgentConfig,
    *,
    announce: Callable[[dict[str, Any]], None] | None = None,
    own_process: bool = False,
) -> Agent:
    """An agent with the backend and reporter its config names (what ``pitrix-agent`` runs).

    Embedders (the simulator's light mode runs many agents in one process) call this with a
    config from ``load_config`` and then ``run_forever()``; ``close()`` releases the backend.

    ``own_process``: the agent is alone in its process (``pitrix-agent``), so a round's small file
    writes (fsync included) run on its loop: a worker thread would cost two more context switches
    per round, and on cores shared with many agents each is a wait in the run queue (the
    propagation benchmark at N=10: 12% of an agent's CPU per round). Many agents on one loop keep
    the worker threads, where one agent's fsync does not stall the others.
    """
    from pitrix.agent.backends import open_backend
    from pitrix.agent.report import LogReporter, MetadReporter

    backend = open_backend(config)
    reporter: Reporter = LogReporter()
    if config.backend == "metad":
        from pitrix.agent.backends.metad import MetadBackend

        assert isinstance(backend, MetadBackend)
        reporter = MetadReporter(backend.client, config.heartbeat_interval)
    return Agent(config, backend, reporter, announce=announce, own_process=own_process)


def _print_ready(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
