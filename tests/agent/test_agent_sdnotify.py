"""pitrix-agent under Type=notify: READY=1 and watchdog pings from its loop, and the commands it
runs (a reload restarting the app) do not inherit the notify socket."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from agent_helpers import AGENT_BIN, port_resource

from tests.sd_listener import NotifyListener


async def test_agent_notifies_ready_and_pings_and_its_commands_cannot_notify(tmp_path: Path) -> None:
    root = tmp_path / "vm"
    seen = tmp_path / "reload.env"
    dest = port_resource(root, reload_cmd=f"env > {seen}.tmp && mv {seen}.tmp {seen}")
    listener = NotifyListener(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="400000", ENV_PORT="8080")
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "agent.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(AGENT_BIN), "-root", str(root), "-confdir", str(root / "etc/confd"), "-backend", "env",
        "-interval", "600", stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env,
    )  # fmt: skip
    try:
        pid, message = await listener.receive()
        assert (pid, message) == (process.pid, "READY=1\nSTATUS=watching env")
        assert await listener.receive() == (process.pid, "WATCHDOG=1")
        deadline = time.monotonic() + 60
        while not seen.exists():  # the first round renders and reloads at once
            assert time.monotonic() < deadline, "the reload command never ran"
            await listener.receive()  # the next ping: the agent is alive meanwhile
        assert dest.read_text() == "listen 8080\n"
        inherited = seen.read_text().splitlines()
        assert "ENV_PORT=8080" in inherited  # the agent's environment reached the command...
        assert not [v for v in inherited if v.startswith(("NOTIFY_SOCKET=", "WATCHDOG_"))]  # ...less these
        process.send_signal(signal.SIGTERM)
        while (said := await listener.receive()) == (process.pid, "WATCHDOG=1"):
            pass
        assert said == (process.pid, "STOPPING=1")
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        listener.close()
        log.close()
