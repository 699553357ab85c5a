"""pitrixd: the runtime daemon.

Starts (or connects to) etcd, resumes every cluster's unfinished job, serves the admin API, and on
SIGTERM stops serving and supervising without failing anything: jobs resume at the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from pitrix import __version__, aio, logs, sdnotify
from pitrix.api.app import create_app
from pitrix.api.auth import Tokens
from pitrix.logs import get_logger
from pitrix.paths import ensure_dir
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.reseal import seal_legacy
from pitrix.runtime.service import DEFAULT_MAX_JOBS, RuntimeService
from pitrix.sealing import SealingError, check_canary, load_sealer
from pitrix.settings import ConfigError, EtcdSettings, Settings, load
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pitrixd", description="The pitrix runtime daemon.")
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default /etc/pitrix/pitrixd.toml if present)"
    )
    parser.add_argument("--state-dir", type=Path, help="state directory (embedded etcd data lives here)")
    parser.add_argument("--api-listen", help="host:port of the admin API (port 0 picks a free one)")
    parser.add_argument("--etcd", action="append", dest="etcd_endpoints", help="etcd endpoint (repeatable)")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument(
        "--replica-id",
        help="this replica's id among pitrixd on one etcd (default: kept in the state dir)",
    )
    parser.add_argument(
        "--owner-ttl", type=int, default=10, help="seconds a dead replica's clusters wait to be adopted"
    )
    parser.add_argument(
        "--recovery-grace", type=float, default=30.0, help="seconds a silent node waits before replacement"
    )
    parser.add_argument(
        "--max-down-fraction",
        type=float,
        default=0.5,
        help="more silent nodes than this share of a cluster halts auto-recovery (meltdown guard)",
    )
    parser.add_argument(
        "--no-auto-recovery", action="store_true", help="never replace silent nodes by itself"
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=DEFAULT_MAX_JOBS,
        help="cluster jobs run at once by this replica; more wait their turn (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"pitrixd {__version__}")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {"state_dir": args.state_dir, "log_level": args.log_level}
    settings = load(args.config, **overrides)
    if args.api_listen:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"listen": args.api_listen})}
        )
    if args.etcd_endpoints:
        # Validated again (not model_copy'd): an https:// endpoint needs the etcd TLS settings.
        try:
            etcd = EtcdSettings.model_validate(
                {**settings.etcd.model_dump(), "endpoints": args.etcd_endpoints}
            )
        except ValidationError as exc:
            problems = "; ".join(str(error["msg"]) for error in exc.errors())
            raise ConfigError(f"invalid configuration (--etcd): etcd: {problems}") from exc
        settings = settings.model_copy(update={"etcd": etcd})
    if settings.etcd.tls is not None and not settings.etcd.endpoints:
        raise ConfigError(
            "etcd.ca_file/cert_file/key_file apply to an external etcd (etcd.endpoints or --etcd); "
            "the embedded etcd makes its own certificates"
        )
    return settings


@dataclass(frozen=True)
class RuntimeOptions:
    replica_id: str | None = None
    owner_ttl: int = 10
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    max_jobs: int = DEFAULT_MAX_JOBS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeOptions:
        if args.owner_ttl < 2:
            raise ConfigError(f"owner-ttl: must be at least 2 seconds, not {args.owner_ttl}")
        if not args.recovery_grace > 0:
            raise ConfigError(f"recovery-grace: must be positive, not {args.recovery_grace}")
        if args.max_jobs < 1:
            raise ConfigError(f"max-jobs: must be at least 1, not {args.max_jobs}")
        if not 0 < args.max_down_fraction <= 1:
            raise ConfigError(f"max-down-fraction: must be in (0, 1], not {args.max_down_fraction}")
        recovery = RecoveryPolicy(
            enabled=not args.no_auto_recovery,
            grace=args.recovery_grace,
            max_down_fraction=args.max_down_fraction,
        )
        return cls(
            replica_id=args.replica_id,
            owner_ttl=args.owner_ttl,
            recovery=recovery,
            max_jobs=args.max_jobs,
        )


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
    rid = f"{socket.gethostname()}-{secrets.token_hex(3)}".replace("/", "-")
    path.write_text(rid + "\n")
    return rid


async def serve(
    settings: Settings, tokens: Tokens | None = None, options: RuntimeOptions | None = None
) -> None:
    log = get_logger("pitrixd")
    # First of all: a SIGTERM during start-up (systemd stopping a start that resumes many jobs, an
    # operator's ^C) must stop pitrixd as one after it, not kill it with its embedded etcd orphaned.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ensure_dir(settings.state_dir)
    embedded: EmbeddedEtcd | None = None
    store: Store | None = None
    service: RuntimeService | None = None
    runner: web.AppRunner | None = None
    try:
        endpoints = settings.etcd.endpoints
        etcd_tls = settings.etcd.tls
        if not endpoints:
            # Mutual TLS with a CA of its own in the 0700 state dir: no other local user reads it.
            embedded = EmbeddedEtcd(settings.state_dir)
            endpoints = [await embedded.start()]
            embedded.supervise()  # etcd dying under us is restarted, not served around
            etcd_tls = embedded.client_tls
            log.info("embedded etcd", url=endpoints[0])
        store = await Store.connect(
            endpoints, prefix=settings.etcd.prefix, timeout=settings.etcd.dial_timeout, tls=etcd_tls
        )
        # The key that seals secrets lives in a file, never in etcd; a replica holding another
        # key than the one this etcd's secrets are sealed with stops here, saying so.
        key_file = settings.secrets.key_path(settings.state_dir)
        sealer, created = await asyncio.to_thread(load_sealer, key_file, settings.secrets.previous_key_files)
        await check_canary(store, sealer, key_file, created)
        await seal_legacy(store, sealer)  # once per etcd: what an older pitrixd stored in clear
        log.info("secrets key", key_file=str(key_file), key_id=sealer.key_id, created=created)
        options = options or RuntimeOptions()
        service = RuntimeService(
            store,
            options.recovery,
            sealer=sealer,
            replica=await asyncio.to_thread(replica_id, settings.state_dir, options.replica_id),
            owner_ttl=options.owner_ttl,
            max_jobs=options.max_jobs,
            metadata_tls=settings.metadata_tls,
        )
        await service.start()
        tokens = tokens or Tokens.from_settings(settings.api)
        runner = web.AppRunner(
            create_app(service, tokens, settings.api), access_log=None, handle_signals=False
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
        log.info("pitrixd ready", url=url, etcd=endpoints, replica=service.replica)
        print(
            json.dumps({"ready": True, "url": url, "etcd": endpoints, "replica": service.replica}), flush=True
        )
        sdnotify.notify(f"READY=1\nSTATUS=serving {url}")
        interval = sdnotify.watchdog_interval()
        watchdog = asyncio.create_task(sdnotify.keep_watchdog(interval)) if interval else None
        await stop.wait()
        log.info("pitrixd stopping")
        sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
    finally:
        if runner is not None:
            await runner.cleanup()
        if service is not None:
            await service.stop()
        if store is not None:
            await store.close()
        if embedded is not None:
            await embedded.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        logs.configure(settings.log_level)
        tokens = Tokens.from_settings(settings.api)
        options = RuntimeOptions.from_args(args)
    except ConfigError as exc:
        print(f"pitrixd: {exc}", file=sys.stderr)
        return 2
    try:
        aio.run(serve(settings, tokens, options))
    except SealingError as exc:
        print(f"pitrixd: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
