"""systemd packaging: the units verify, and pitrixd really speaks the notify protocol."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent


def installed(tmp_path: Path) -> list[Path]:
    """The units as an install under this virtualenv would have them (ExecStart must exist)."""
    paths = []
    for unit in UNITS:
        path = tmp_path / unit.name
        path.write_text(unit.read_text().replace("/opt/pitrix/bin/", f"{BIN}/"))
        paths.append(path)
    return paths


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert {u.name for u in UNITS} == {"pitrixd.service", "pitrix-metad.service", "pitrix-agent.service"}
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, installed(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify only warns (exit 0) about many mistakes, an unknown Type= among them: no output at all.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_pitrixd_unit_is_hardened(tmp_path: Path) -> None:
    unit = next(p for p in installed(tmp_path) if p.name == "pitrixd.service")
    text = unit.read_text()
    for option in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes",
                   "ProtectSystem=strict", "PrivateTmp=yes"):  # fmt: skip
        assert option in text, option
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for pitrixd.service: ([\d.]+)", result.stdout + result.stderr)
    assert found is not None, result
    assert float(found[1]) < 3.0, result.stdout  # "OK" is below 4.0 in systemd's scale


async def test_pitrixd_sends_ready_watchdog_and_stopping(
    etcd_url: str, etcd_env: dict[str, str], tmp_path: Path
) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    env = dict(
        os.environ,
        **etcd_env,
        NOTIFY_SOCKET=address,
        WATCHDOG_USEC="200000",  # 0.2 s: pings every 0.1 s
        PITRIX_ETCD__PREFIX=f"/sdnotify-{secrets.token_hex(4)}",
    )
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(tmp_path / "state"), "--api-listen", "127.0.0.1:0",
        "--etcd", etcd_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip

    async def message() -> str:
        return (await asyncio.wait_for(loop.sock_recv(listener, 4096), 60)).decode()

    try:
        ready = await message()
        assert ready.startswith("READY=1") and "STATUS=serving http://127.0.0.1:" in ready
        assert process.stdout is not None
        assert b'"ready": true' in await asyncio.wait_for(process.stdout.readline(), 60)
        assert await message() == "WATCHDOG=1"
        assert await message() == "WATCHDOG=1"
        process.send_signal(signal.SIGTERM)
        while (text := await message()) == "WATCHDOG=1":
            pass
        assert text == "STOPPING=1"
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        listener.close()


def test_notify_without_systemd_is_a_no_op() -> None:
    from pitrix.sdnotify import notify, watchdog_interval

    assert notify("READY=1", {}) is False
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None  # not us
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
