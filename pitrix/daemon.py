"""pitrixd: the runtime daemon.

Starts (or connects to) etcd, resumes every cluster's unfinished job, serves the admin API, and on
SIGTERM stops serving and supervising without failing anything: jobs resume at the next start.

The stop is bounded (``stop_timeout``): each stage runs as a task of its own and one that overruns
its share is logged by name and left behind, so a job that ignores its cancellation (or a client
holding a request open) cannot keep the process, and its embedded etcd, alive. A second SIGTERM or
SIGINT exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix import __version__

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from pitrix.api.auth import Tokens
    from pitrix.runtime.service import RuntimeService
    from pitrix.settings import Settings
    from pitrix.store import Store
    from pitrix.store.embedded import EmbeddedEtcd

# `pitrixd --version`, `--help` and a bad flag answer from argparse alone: the runtime (aiohttp,
# pydantic, etcd's client, cryptography) is imported by the functions that run it, after parsing.

# Of stop_timeout, the share kept for stopping the embedded etcd after pitrixd's own stages, so
# that these running late never leave it behind (it gets this much, at most half the bound).
ETCD_STOP_SHARE = 4.0
# How long an API request still in flight at stop may take before it is cancelled (a client
# holding a job's wait or an event stream would otherwise hold the stop for aiohttp's 60 s).
API_GRACE = 2.0
# Past stop_timeout, this long again before a thread apart from the event loop ends the process
# whatever the loop is doing (a blocking call, the interpreter joining a stuck thread).
EXIT_GUARD_MARGIN = 5.0

# Each flag (argparse dest) and the setting it gives: flags go over the environment and the file.
FLAG_KEYS: dict[str, str] = {
    "state_dir": "state_dir",
    "log_level": "log_level",
    "stop_timeout": "stop_timeout",
    "api_listen": "api.listen",
    "etcd_endpoints": "etcd.endpoints",
    "replica_id": "runtime.replica_id",
    "owner_ttl": "runtime.owner_ttl",
    "max_jobs": "runtime.max_jobs",
    "auto_recovery": "runtime.recovery.enabled",
    "recovery_grace": "runtime.recovery.grace",
    "max_down_fraction": "runtime.recovery.max_down_fraction",
    "step_attempts": "runtime.step_retry.attempts",
    "step_retry_delay": "runtime.step_retry.first_delay",
    "step_retry_max_delay": "runtime.step_retry.max_delay",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pitrixd",
        description="The pitrix runtime daemon.",
        epilog="Each flag sets the configuration key in brackets, over the environment "
        "(PITRIX_<SECTION>__<KEY>, e.g. PITRIX_RUNTIME__MAX_JOBS) and the config file; "
        "docs/config.md lists every key and its default.",
    )
    add = parser.add_argument
    add("--config", type=Path, help="TOML config file (default /etc/pitrix/pitrixd.toml if present)")
    add("--state-dir", type=Path, help="state directory, embedded etcd data lives here [state_dir]")
    add("--api-listen", help="host:port of the admin API, port 0 picks a free one [api.listen]")
    add("--etcd", action="append", dest="etcd_endpoints", help="etcd endpoint, repeatable [etcd.endpoints]")
    add("--log-level", help="debug, info, warning or error [log_level]")
    add(
        "--stop-timeout",
        type=float,
        help="seconds a stop may take; what overruns is abandoned and pitrixd exits [stop_timeout]",
    )
    runtime = parser.add_argument_group("runtime", "how this replica supervises clusters")
    runtime.add_argument(
        "--replica-id",
        help="this replica's id among pitrixd on one etcd, default kept in the state dir "
        "[runtime.replica_id]",
    )
    runtime.add_argument(
        "--owner-ttl",
        type=int,
        help="seconds a dead replica's clusters wait to be adopted [runtime.owner_ttl]",
    )
    runtime.add_argument(
        "--max-jobs",
        type=int,
        help="cluster jobs run at once by this replica; more wait their turn [runtime.max_jobs]",
    )
    runtime.add_argument(
        "--no-auto-recovery",
        action="store_const",
        const=False,
        dest="auto_recovery",
        help="never replace silent nodes by itself [runtime.recovery.enabled = false]",
    )
    runtime.add_argument(
        "--recovery-grace",
        type=float,
        help="seconds a silent node waits before replacement [runtime.recovery.grace]",
    )
    runtime.add_argument(
        "--max-down-fraction",
        type=float,
        help="more silent nodes than this share of a cluster halts auto-recovery "
        "[runtime.recovery.max_down_fraction]",
    )
    runtime.add_argument(
        "--step-attempts",
        type=int,
        help="runs of a step after retryable cloud errors, the first included [runtime.step_retry.attempts]",
    )
    runtime.add_argument(
        "--step-retry-delay",
        type=float,
        help="seconds before a step's second run, doubling each time [runtime.step_retry.first_delay]",
    )
    runtime.add_argument(
        "--step-retry-max-delay",
        type=float,
        help="longest pause between two runs of a step [runtime.step_retry.max_delay]",
    )
    add("--version", action="version", version=f"pitrixd {__version__}")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    from pitrix.settings import ConfigError, load

    settings = load(args.config, {key: getattr(args, dest) for dest, key in FLAG_KEYS.items()})
    if settings.etcd.tls is not None and not settings.etcd.endpoints:
        raise ConfigError(
            "etcd.ca_file/cert_file/key_file apply to an external etcd (etcd.endpoints or --etcd); "
            "the embedded etcd makes its own certificates"
        )
    return settings


def runtime_service(store: Store, settings: Settings, **given: Any) -> RuntimeService:
    """The RuntimeService ``settings.runtime`` describes (``given``: sealer, replica)."""
    from pitrix.runtime.recovery import RecoveryPolicy
    from pitrix.runtime.retrying import RetryPolicy
    from pitrix.runtime.service import RuntimeService

    runtime = settings.runtime
    recovery = RecoveryPolicy(
        enabled=runtime.recovery.enabled,
        grace=runtime.recovery.grace,
        max_down_fraction=runtime.recovery.max_down_fraction,
        metadata=runtime.recovery.metadata,
        metadata_interval=runtime.recovery.metadata_interval,
        metadata_silence=runtime.recovery.metadata_silence,
    )
    retry = RetryPolicy(
        attempts=runtime.step_retry.attempts,
        first_delay=runtime.step_retry.first_delay,
        max_delay=runtime.step_retry.max_delay,
    )
    return RuntimeService(
        store,
        recovery,
        owner_ttl=runtime.owner_ttl,
        metadata_tls=settings.metadata_tls,
        retry=retry,
        max_jobs=runtime.max_jobs,
        **given,
    )


async def check_external_etcd(store: Store) -> None:
    """Refuse to start on an etcd that would refuse pitrixd's largest write halfway through a job
    (its --max-txn-ops too low): said now, with what to set, rather than by a failed scale-in."""
    from pitrix.runtime.txn_size import largest_transaction
    from pitrix.store.txn_limit import check_txn_ops

    await check_txn_ops(store, largest_transaction())


def replica_id(state_dir: Path, given: str | None) -> str:
    """This replica's lasting id: a restart on the same state dir takes its clusters back at once."""
    path = state_dir / "replica-id"
    if given:
        path.write_text(given + "\n")
        return given
    try:
        return path.read_text().strip() or _new_replica_id(path)
    except FileNotFoundError:
        return _new_replica_id(path)


def _new_replica_id(path: Path) -> str:
    import secrets
    import socket

    rid = f"{socket.gethostname()}-{secrets.token_hex(3)}".replace("/", "-")
    path.write_text(rid + "\n")
    return rid


class _Parts:
    """What the start made so far: the stop undoes exactly that, in reverse order."""

    def __init__(self) -> None:
        self.embedded: EmbeddedEtcd | None = None
        self.store: Store | None = None
        self.service: RuntimeService | None = None
        self.runner: web.AppRunner | None = None
        self.watchdog: asyncio.Task[None] | None = None


async def _start(settings: Settings, tokens: Tokens | None, parts: _Parts) -> None:
    import asyncio

    from aiohttp import web

    from pitrix import sdnotify
    from pitrix.api.app import create_app
    from pitrix.api.auth import Tokens
    from pitrix.logs import get_logger
    from pitrix.paths import ensure_dir
    from pitrix.runtime.reseal import seal_legacy
    from pitrix.sealing import check_canary, load_sealer
    from pitrix.store import Store
    from pitrix.store.embedded import EmbeddedEtcd

    log = get_logger("pitrixd")
    ensure_dir(settings.state_dir)
    endpoints = settings.etcd.endpoints
    etcd_tls = settings.etcd.tls
    if not endpoints:
        # Mutual TLS with a CA of its own in the 0700 state dir: no other local user reads it.
        parts.embedded = embedded = EmbeddedEtcd(settings.state_dir)
        endpoints = [await embedded.start()]
        embedded.supervise()  # etcd dying under us is restarted, not served around
        etcd_tls = embedded.client_tls
        log.info("embedded etcd", url=endpoints[0], pid=embedded.pid)
    parts.store = store = await Store.connect(
        endpoints, prefix=settings.etcd.prefix, timeout=settings.etcd.dial_timeout, tls=etcd_tls
    )
    if parts.embedded is None:
        await check_external_etcd(store)
    # The key that seals secrets lives in a file, never in etcd; a replica holding another
    # key than the one this etcd's secrets are sealed with stops here, saying so.
    key_file = settings.secrets.key_path(settings.state_dir)
    sealer, created = await asyncio.to_thread(load_sealer, key_file, settings.secrets.previous_key_files)
    await check_canary(store, sealer, key_file, created)
    await seal_legacy(store, sealer)  # once per etcd: what an older pitrixd stored in clear
    log.info("secrets key", key_file=str(key_file), key_id=sealer.key_id, created=created)
    replica = await asyncio.to_thread(replica_id, settings.state_dir, settings.runtime.replica_id)
    parts.service = service = runtime_service(store, settings, sealer=sealer, replica=replica)
    await service.start()
    tokens = tokens or Tokens.from_settings(settings.api)
    parts.runner = runner = web.AppRunner(
        create_app(service, tokens, settings.api),
        access_log=None,
        handle_signals=False,
        # aiohttp waits this long twice (for the handler, then again once its input is cut)
        # before it cancels the handler: half the grace each.
        shutdown_timeout=min(API_GRACE, settings.stop_timeout / 4) / 2,
    )
    await runner.setup()
    if settings.api.unix_socket:
        site: web.BaseSite = web.UnixSite(runner, str(settings.api.unix_socket))
        await site.start()
        url = f"unix:{settings.api.unix_socket}"
    else:
        site = web.TCPSite(runner, settings.api.host, settings.api.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://{settings.api.host}:{port}"
    await service.advertise(url)  # the other replicas (and `pitrix replicas`) learn where it answers
    log.info("pitrixd ready", url=url, etcd=endpoints, replica=service.replica)
    ready: dict[str, Any] = {"ready": True, "url": url, "etcd": endpoints, "replica": service.replica}
    if parts.embedded is not None:
        # Whoever has to SIGKILL pitrixd finds its etcd here (pitrix.cli.demo.stop_child does).
        ready["etcd_pid_file"] = str(parts.embedded.record_path.resolve())
    print(json.dumps(ready), flush=True)
    sdnotify.notify(f"READY=1\nSTATUS=serving {url}")
    interval = sdnotify.watchdog_interval()
    if interval:
        parts.watchdog = asyncio.create_task(sdnotify.keep_watchdog(interval), name="sd-watchdog")


def _exit_now(status: int) -> None:
    """End the process without the interpreter's clean-up, which would wait for what hangs."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _arm_exit_guard(after: float) -> None:
    """From a thread of its own: exit after ``after`` seconds if nothing else ended the process."""
    import threading

    def overdue() -> None:
        print(f"pitrixd: stop still not done {after:.0f}s after the signal: exiting", file=sys.stderr)
        _exit_now(0)

    guard = threading.Timer(after, overdue)
    guard.daemon = True
    guard.start()


async def _stage(name: str, work: Awaitable[Any], deadline: float) -> bool:
    """Run ``work`` until ``deadline`` (loop time); past it, cancel it and leave it behind.

    A task of its own, waited on with ``asyncio.wait``: a stage that swallows its cancellation
    cannot hold the stop the way it would under ``await`` (or ``asyncio.timeout``).
    """
    import asyncio

    from pitrix.logs import get_logger

    log = get_logger("pitrixd", stage=name)
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
    if not done:
        task.cancel()
        log.error("stop stage overran its time; abandoned")
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("stop stage failed", error=repr(task.exception()))
    return True


async def _stop(parts: _Parts, starting: asyncio.Task[None], timeout: float) -> list[str]:
    """Undo what the start made, within ``timeout`` seconds; the names of the stages abandoned."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    own = deadline - min(ETCD_STOP_SHARE, timeout / 2)  # the rest is the embedded etcd's
    abandoned: list[str] = []

    async def stage(name: str, work: Awaitable[Any], until: float) -> None:
        if not await _stage(name, work, until):
            abandoned.append(name)

    if not starting.done():
        starting.cancel()  # a start still resuming jobs is given up: they resume next time
        await stage("start-up", starting, own)
    if parts.watchdog is not None:
        parts.watchdog.cancel()
    if parts.runner is not None:
        await stage("api", parts.runner.cleanup(), own)
    if parts.service is not None:
        await stage("runtime", parts.service.stop(), own)
    if parts.store is not None:
        await stage("store", parts.store.close(), own)
    if parts.embedded is not None:
        # SIGTERM, then SIGKILL half-way through what is left: it must not outlive pitrixd.
        grace = max(0.5, (deadline - loop.time()) / 2)
        await stage("embedded etcd", parts.embedded.stop(grace=grace), max(deadline, loop.time() + 1.0))
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in others:
        task.cancel()
    if others:
        _, pending = await asyncio.wait(others, timeout=max(0.1, deadline - loop.time()))
        if pending:
            abandoned.append(f"{len(pending)} other tasks")
    return abandoned


async def serve(settings: Settings, tokens: Tokens | None = None) -> None:
    """Run pitrixd until SIGTERM or SIGINT, then stop within ``settings.stop_timeout``.

    If a stage of the stop had to be abandoned, the process exits from here (status 0): the
    event loop's own clean-up would wait for what hangs without a bound.
    """
    import asyncio
    import signal

    from pitrix import sdnotify
    from pitrix.logs import get_logger

    log = get_logger("pitrixd")
    # First of all: a SIGTERM during start-up (systemd stopping a start that resumes many jobs, an
    # operator's ^C) must stop pitrixd as one after it, not kill it with its embedded etcd orphaned.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: pitrixd exits at once", signal=signal.Signals(signum).name)
            _exit_now(128 + signum)
        stop.set()
        _arm_exit_guard(settings.stop_timeout + EXIT_GUARD_MARGIN)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    parts = _Parts()
    starting = asyncio.create_task(_start(settings, tokens, parts), name="pitrixd-start")
    signalled = asyncio.create_task(stop.wait(), name="pitrixd-signal")
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a start that failed raises, once what it made is stopped
            await signalled
    finally:
        signalled.cancel()
        if stop.is_set():
            log.info("pitrixd stopping", timeout=settings.stop_timeout)
            sdnotify.notify("STOPPING=1")
        began = loop.time()
        abandoned = await _stop(parts, starting, settings.stop_timeout)
        log.info("pitrixd stopped", seconds=round(loop.time() - began, 3), abandoned=abandoned or None)
        if abandoned and stop.is_set():
            _exit_now(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pitrix import aio, logs
    from pitrix.api.auth import Tokens
    from pitrix.sealing import SealingError
    from pitrix.settings import ConfigError

    try:
        settings = settings_from(args)
        logs.configure(settings.log_level)
        tokens = Tokens.from_settings(settings.api)
    except ConfigError as exc:
        print(f"pitrixd: {exc}", file=sys.stderr)
        return 2
    from pitrix.store.txn_limit import TxnLimitTooLow

    try:
        aio.run(serve(settings, tokens))
    except (SealingError, TxnLimitTooLow) as exc:
        print(f"pitrixd: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
