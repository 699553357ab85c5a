"""systemd's notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

With ``Type=notify`` systemd waits for READY=1 before it calls the unit started, and with
``WatchdogSec=`` it restarts the daemon when WATCHDOG=1 stops arriving: a hung event loop stops the
pings because they are sent from the loop itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the agent's one-shot path imports this module without an event loop
    import asyncio

# What systemd gives the service's main process only. A child that inherits NOTIFY_SOCKET (the
# embedded etcd is built with systemd support) would send its own READY=1, and with it systemd
# may call the unit started before the daemon is; the watchdog pair names the main process.
SERVICE_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(path: str) -> str:
    # An abstract socket is written '@name' in the environment and starts with a NUL on the wire.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``); False when not run by systemd (no $NOTIFY_SOCKET)."""
    path = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    import socket  # here: the agent's one-shot imports this module for child_environ only

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), _address(path))
        except OSError as exc:
            from pitrix.logs import get_logger  # here: the agent's commands import this module

            get_logger("pitrix.sdnotify").warning("notify failed", socket=path, error=str(exc))
            return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's watchdog timeout in seconds, if a watchdog is set for this very process."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def keep_watchdog(interval: float) -> None:
    """Ping the watchdog every ``interval`` seconds until cancelled."""
    import asyncio

    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def child_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours without what systemd meant for us alone."""
    env = dict(environ if environ is not None else os.environ)
    for name in SERVICE_ONLY:
        env.pop(name, None)
    return env


async def serving(status: str) -> asyncio.Task[None] | None:
    """Say READY=1 (with a STATUS= line) and start the watchdog pings if systemd asked for them:
    the task to cancel at stop, None without a watchdog."""
    import asyncio

    notify(f"READY=1\nSTATUS={status}")
    interval = watchdog_interval()
    if interval is None:
        return None
    return asyncio.create_task(keep_watchdog(interval), name="sd-watchdog")
