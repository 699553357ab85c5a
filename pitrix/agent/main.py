"""``pitrix-agent``: confd's command line (single- or double-dash flags) plus ``--root``.

Only the standard library is imported at module level: the agent starts on every VM, often, and
must not pay for what its backend does not use.
"""

from __future__ import annotations

import _thread
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix.agent.errors import AgentError
from pitrix.agent.flags import FLAGS, GO_BOOLEANS, OWN_FLAGS, refuse_missing_backends
from pitrix.agent.rootfs import default_root

if TYPE_CHECKING:
    import argparse

    from pitrix.agent.config import AgentConfig
    from pitrix.agent.stopsignal import StopSignals

VERSION = "0.1.0"
_LOG_LEVELS = {"panic": "critical", "fatal": "critical", "warn": "warning"}


def build_parser() -> argparse.ArgumentParser:
    """argparse's reading of the command line: what ``parse_quickly`` does not take (``-help``,
    errors and their messages, unusual forms) goes through it."""
    import argparse

    from pitrix.agent.flags import add_confd_flags, go_boolean
    from pitrix.argparser import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="pitrix-agent",
        description="confd-compatible configuration agent for pitrix instances",
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )

    def flag(name: str, **kwargs: object) -> None:
        parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)  # type: ignore[arg-type]

    def switch(name: str, help_text: str) -> None:
        flag(name, nargs="?", const=True, default=None, type=go_boolean, help=help_text)

    switch("onetime", "run once and exit")
    switch("noop", "only show pending changes")
    switch("watch", "enable watch support")
    switch("sync-only", "sync without check_cmd and reload_cmd")
    switch("keep-stage-file", "keep staged files")
    switch("version", "print version and exit")
    flag("interval", type=float, default=None, help="backend polling interval (seconds)")
    flag("confdir", default=None, help="confd conf directory")
    flag("config-file", default=None, help="the agent's config file")
    flag("backend", default=None, help="backend to use (metad, etcd, etcdv3, redis, zookeeper, file, env)")
    flag("node", action="append", default=None, help="backend node (repeatable)")
    flag("prefix", default=None, help="key path prefix")
    flag("file", action="append", default=None, help="YAML file for the file backend (repeatable)")
    flag("log-level", default=None, help="level which confd should log messages")
    flag("client-cert", default=None, help="client certificate file")
    flag("client-key", default=None, help="client key file")
    flag("client-ca-keys", default=None, help="CA certificate file")
    flag("username", default=None, help="username for the backend")
    flag("password", default=None, help="password for the backend")
    flag("root", default=None, help="the VM's root directory (default $PITRIX_VM_ROOT or /)")
    flag("profile", default=None, help="compatibility profile: native or appcenter")
    flag("metadata-listen", default=None, help="appcenter: plain-HTTP metadata proxy ADDR:PORT, or off")
    flag("template-compare", default=None, help="template eq/ne/lt/le/gt/ge: go or yunify")
    add_confd_flags(parser)
    return parser


def _kinds() -> dict[str, str]:
    """Every flag's name and how its value is read: "bool" (``-flag``, ``-flag=BOOL``), "str",
    "float" or "list" (repeatable) -- what ``build_parser`` gives argparse, as one table."""
    kinds = {}
    for name, flag in (FLAGS | OWN_FLAGS).items():
        kinds[name] = "bool" if flag.kind == "" else "list" if flag.kind == "value" else "str"
    kinds["interval"] = "float"
    return kinds


def parse_quickly(argv: list[str]) -> types.SimpleNamespace | None:
    """The command line as ``build_parser().parse_args`` reads it, without argparse, when every
    argument is a known flag in a plain form (``-flag``, ``-flag=value``, ``-flag value``); None
    for anything else (``-help``, an unknown or malformed flag, a value that looks like a flag),
    which argparse then reads and answers as it always has.

    The agent starts on every VM, often: argparse's import and its parser for ~40 flags were a
    tenth of a one-shot render, and a watching agent would keep them for good.
    """
    kinds = _kinds()
    values: dict[str, Any] = {name.replace("-", "_"): None for name in kinds}
    i = 0
    while i < len(argv):
        arg = argv[i]
        body = arg[2:] if arg.startswith("--") else arg[1:] if arg.startswith("-") else ""
        if not body or body.startswith("-"):
            return None
        name, eq, value = body.partition("=")
        kind = kinds.get(name)
        if kind is None:
            return None
        dest = name.replace("-", "_")
        i += 1
        if kind == "bool":
            if not eq:
                if i < len(argv) and not argv[i].startswith("-"):
                    return None  # argparse would take it as the flag's value
                values[dest] = True
                continue
            lowered = value.lower()
            if lowered not in GO_BOOLEANS:
                return None
            values[dest] = GO_BOOLEANS[lowered]
            continue
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        if kind == "float":
            try:
                values[dest] = float(value)
            except ValueError:
                return None
        elif kind == "list":
            values[dest] = [*(values[dest] or []), value]
        else:
            values[dest] = value
    return types.SimpleNamespace(**values)


def config_from_args(args: argparse.Namespace | types.SimpleNamespace) -> AgentConfig:
    """Flags over the config file; command-line paths as given, file paths under the root."""
    from pitrix.agent.config import Overrides, load_config

    refuse_missing_backends(args)
    root = Path(args.root).resolve() if args.root else default_root()

    def path(value: str | None) -> Path | None:
        return Path(value).absolute() if value else None

    overrides = Overrides(
        backend=args.backend,
        nodes=args.node,
        confdir=path(args.confdir),
        prefix=args.prefix,
        watch=args.watch,
        interval=args.interval,
        onetime=args.onetime,
        noop=args.noop,
        sync_only=args.sync_only,
        keep_stage_file=args.keep_stage_file,
        log_level=args.log_level,
        files=[Path(f).absolute() for f in args.file] if args.file else None,
        client_cert=path(args.client_cert),
        client_key=path(args.client_key),
        client_cakeys=path(args.client_ca_keys),
        username=args.username,
        password=args.password,
        separator=args.separator,
        filter=args.filter,
        basic_auth=args.basic_auth,
        client_insecure=args.client_insecure,
        scheme=args.scheme,
        srv_record=args.srv_record,
        srv_domain=args.srv_domain,
        log_format=args.log_format,
        profile=args.profile,
        metadata_listen=args.metadata_listen,
        template_compare=args.template_compare,
    )
    config = load_config(root, path(args.config_file), overrides)
    if config.srv_record or config.srv_domain:
        from pitrix.agent.srv import apply_srv

        apply_srv(config)
    return config


async def _run(config: AgentConfig, stops: StopSignals | None) -> int:
    """The agent on the running loop; ``stops`` (None for a one-shot, which signals end as they
    always have) stop a long-running one."""
    from pitrix import sdnotify
    from pitrix.agent.agent import build_agent

    agent = build_agent(config, own_process=True)
    try:
        if config.onetime or stops is None:
            return 0 if await agent.run_onetime() else 1
        stops.call(agent.stop)
        # Ready once its loops run (metad may still be away: the agent retries, it is up); the
        # watchdog pings come from this loop, so a hung one gets the agent restarted.
        watchdog = await sdnotify.serving(f"watching {config.backend}")
        try:
            await agent.run_forever()
        finally:
            sdnotify.notify("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
        return 0
    finally:
        if stops is not None:
            stops.stop_calling()
        await agent.close()


class _Deferred(types.ModuleType):
    """A module in ``sys.modules`` that imports the real one on first attribute access, and
    from then on hands every attribute over from it (``sys.modules`` then holds the real one).

    The first access may come from any thread (a watching agent never loads ``inspect`` before
    its workers start): a lock makes that one import, never a second copy of the module."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lock"] = _thread.allocate_lock()

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            with self.__dict__["_lock"]:
                real = self.__dict__.get("_real")
                if real is None:
                    import importlib

                    if sys.modules.get(self.__name__) is self:
                        del sys.modules[self.__name__]
                    real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, name)


def defer_inspect() -> None:
    """Load the stdlib's ``inspect`` only when something uses it.

    ``dataclasses`` imports it for one call (a signature for a class without a docstring), and it
    is the largest single import of a one-shot render (ast, dis, tokenize and the rest: about a
    third of a bare interpreter's start), which uses none of it; nor does a watching agent (~1 MiB
    of its RSS: see ``_run_on_loop``). Whoever first reads an attribute loads the real module,
    from any thread (the stand-in's lock makes a race import it once); modules that imported
    the stand-in keep reaching the real one through it.
    (``importlib.util.LazyLoader`` cannot do this on Python 3.11: an ``import`` statement reads
    the module's ``__spec__``, which loads it.)
    """
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = _Deferred("inspect")


def main(argv: list[str] | None = None) -> int:
    defer_inspect()
    if argv is None:
        argv = sys.argv[1:]
    args = parse_quickly(argv) or build_parser().parse_args(argv)
    if args.version:
        print(f"pitrix-agent {VERSION} (confd-compatible)")
        return 0
    try:
        config = config_from_args(args)
    except AgentError as exc:
        print(f"pitrix-agent: {exc}", file=sys.stderr)
        return 1
    from pitrix.agent import log

    level = config.log_level.lower()
    level = _LOG_LEVELS.get(level, level)
    try:
        json_lines, confd_lines = log_style(config)
        log.configure(level, json_lines=json_lines, confd=confd_lines)
    except ValueError as exc:
        print(f"pitrix-agent: {exc}", file=sys.stderr)
        return 1
    if confd_lines:
        log_start(config)
    try:
        if config.onetime:
            from pitrix.agent import oneshot

            status = oneshot.run(config) if oneshot.runs_inline(config) else None
            if status is not None:
                return status
        return _run_on_loop(config, level)
    except AgentError as exc:
        print(f"pitrix-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run_on_loop(config: AgentConfig, level: str) -> int:
    """Every mode but an inline one-shot: the agent on the stdlib event loop.

    Not uvloop, which the daemons run on: the agent holds a connection or two and mostly waits,
    and uvloop's extension was ~2 MiB of a watching agent's ~26 MiB resident memory, for the
    same CPU per change on either loop (docs/benchmarks.md). ``inspect`` stays deferred
    (``defer_inspect``): asyncio imports it but, on the agent's path, calls it nowhere once
    signals come through ``stopsignal``; a first use from a worker thread would be safe (the
    stand-in's lock), only no longer free.
    """
    import logging
    import signal

    from pitrix import aio
    from pitrix.agent.stopsignal import StopSignals

    # What asyncio itself logs (a callback's exception) goes to stderr as pitrix.logs sends it.
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s"
    )
    if config.onetime:
        return aio.run(_run(config, None), tune_gc=False, prefer_uvloop=False)
    with StopSignals((signal.SIGTERM, signal.SIGINT)) as stops:
        return aio.run(_run(config, stops), tune_gc=False, prefer_uvloop=False)


def log_style(config: AgentConfig) -> tuple[bool | None, bool]:
    """``-log-format``: json, confd's text lines, or (unset) JSON unless stderr is a terminal.

    Returns ``log.configure``'s ``json_lines`` and ``confd``.
    """
    if config.log_format == "json":
        return True, False
    if config.log_format == "text":
        return None, True
    return None, False


def log_start(config: AgentConfig) -> None:
    """confd's first lines: which backend, reading what (in confd's format only: the JSON lines
    have always begun with the first resource's)."""
    from pitrix.agent import log

    sources = [str(f) for f in config.files] if config.backend == "file" else config.nodes
    log.get_logger("pitrix.agent").info("starting", backend=config.backend, sources=", ".join(sources))


if __name__ == "__main__":
    sys.exit(main())
