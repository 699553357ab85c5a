"""pitrixd: the runtime daemon.

Starts (or connects to) etcd, resumes every cluster's unfinished job, serves the admin API, and on
SIGTERM stops serving and supervising without failing anything: jobs resume at the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from aiohttp import web

from pitrix import __version__, aio, logs, sdnotify
from pitrix.api.app import create_app
from pitrix.api.auth import Tokens
from pitrix.logs import get_logger
from pitrix.paths import ensure_dir
from pitrix.runtime.service import RuntimeService
from pitrix.settings import ConfigError, Settings, load
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
        etcd = settings.etcd.model_copy(update={"endpoints": args.etcd_endpoints})
        settings = settings.model_copy(update={"etcd": etcd})
    return settings


async def serve(settings: Settings, tokens: Tokens | None = None) -> None:
    log = get_logger("pitrixd")
    ensure_dir(settings.state_dir)
    embedded: EmbeddedEtcd | None = None
    endpoints = settings.etcd.endpoints
    if not endpoints:
        embedded = EmbeddedEtcd(settings.state_dir)
        endpoints = [await embedded.start()]
        log.info("embedded etcd", url=endpoints[0])
    store = await Store.connect(endpoints, prefix=settings.etcd.prefix, timeout=settings.etcd.dial_timeout)
    service = RuntimeService(store)
    runner: web.AppRunner | None = None
    try:
        await service.start()
        tokens = tokens or Tokens.from_settings(settings.api)
        runner = web.AppRunner(create_app(service, tokens), access_log=None, handle_signals=False)
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
        log.info("pitrixd ready", url=url, etcd=endpoints)
        print(json.dumps({"ready": True, "url": url, "etcd": endpoints}), flush=True)
        sdnotify.notify(f"READY=1\nSTATUS=serving {url}")
        interval = sdnotify.watchdog_interval()
        watchdog = asyncio.create_task(sdnotify.keep_watchdog(interval)) if interval else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("pitrixd stopping")
        sdnotify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
    finally:
        if runner is not None:
            await runner.cleanup()
        await service.stop()
        await store.close()
        if embedded is not None:
            await embedded.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        logs.configure(settings.log_level)
        tokens = Tokens.from_settings(settings.api)
    except ConfigError as exc:
        print(f"pitrixd: {exc}", file=sys.stderr)
        return 2
    aio.run(serve(settings, tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
