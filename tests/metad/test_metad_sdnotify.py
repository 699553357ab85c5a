"""pitrix-metad under Type=notify: READY=1 and watchdog pings from metad itself, never from its
embedded etcd (which speaks the protocol too and would otherwise inherit the socket)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.sd_listener import NotifyListener


async def test_metad_notifies_ready_and_pings_and_its_etcd_stays_silent(tmp_path: Path, net) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="400000")  # pings every 0.2 s
    env.pop("WATCHDOG_PID", None)
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        "--embedded-etcd", "--state-dir", str(state), "--etcd-client-port", "0", "--etcd-peer-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        # Everything before metad's READY=1 (etcd's own READY=1, had it inherited the socket) is
        # looked at: only metad may speak.
        pid, message = await listener.receive()
        assert pid == process.pid, message
        assert message.startswith("READY=1\nSTATUS=serving http://"), message
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        assert ready["ready"] is True
        etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
        assert etcd_pid != process.pid
        environ = (await asyncio.to_thread(Path(f"/proc/{etcd_pid}/environ").read_bytes)).split(b"\0")
        assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]
        for _ in range(2):
            assert await listener.receive() == (process.pid, "WATCHDOG=1")
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
