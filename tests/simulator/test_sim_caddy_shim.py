"""The caddy shim (simulator/appcenter_shims/caddy) serves what a Caddy 1 Caddyfile of the
AppCenter packages' kind asks, and refuses what it does not understand.

It runs as the packages' caddy role starts Caddy (``caddy -agree=true -conf=FILE``) on a
loopback port of its own; requests go over real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from simulator.appcenter_image import SHIMS_DIR

CADDY = SHIMS_DIR / "caddy"
HOST = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def caddyfile(root: Path, port: int, extra: str = "") -> str:
    # the shape Zookeeper's template writes: one site, basic auth on /, a root and browsable folders
    return (
        f"{HOST}:{port} {{\n"
        '  basicauth / "admin" "p#ss word"\n'
        f"  root {root}\n"
        "  gzip\n"
        "  browse /logs\n"
        f"{extra}"
        "  tls off\n"
        "}\n"
    )


async def start(conf: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CADDY), "-agree=true", f"-conf={conf}", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)  # says where it serves once bound
    assert b"serving" in line, line
    return proc


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Path, Path, int]]:
    root = tmp_path / "data"
    (root / "logs").mkdir(parents=True)
    (root / "dump").mkdir()
    (root / "logs" / "zk.log").write_text("a log line\n")
    (root / "dump" / "heap").write_text("x")
    (tmp_path / "index.html").write_text("<p>console</p>")
    (root / "index.html").symlink_to(tmp_path / "index.html")  # as the package links it
    port = free_port()
    conf = tmp_path / "caddyfile"
    conf.write_text(caddyfile(root, port))
    yield root, conf, port


async def get(port: int, path: str, auth: tuple[str, str] | None = ("admin", "p#ss word")) -> tuple[int, str]:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{HOST}:{port}{path}", headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def raw_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    auth = base64.b64encode(b"admin:p#ss word").decode()
    writer.write(f"GET {path} HTTP/1.0\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
    status = await reader.readline()
    writer.close()
    return int(status.split()[1])


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGQUIT)  # the caddy role's KillSignal
    return await asyncio.wait_for(proc.wait(), 20)


async def test_serves_the_packages_caddyfile(site: tuple[Path, Path, int]) -> None:
    _, conf, port = site
    proc = await start(conf)
    try:
        assert (await get(port, "/", auth=None))[0] == 401
        assert (await get(port, "/", auth=("admin", "wrong")))[0] == 401
        assert await get(port, "/") == (200, "<p>console</p>")  # the index, through its link
        status, listing = await get(port, "/logs/")
        assert status == 200 and 'href="zk.log"' in listing
        assert await get(port, "/logs/zk.log") == (200, "a log line\n")
        assert (await get(port, "/logs"))[0] == 301  # a folder without its slash
        assert (await get(port, "/dump/"))[0] == 404  # not browsable: no listing
        assert await get(port, "/dump/heap") == (200, "x")  # its files are still served
        for path in ("/logs/../../caddyfile", "/logs/%2e%2e/%2e%2e/caddyfile"):
            assert await raw_status(port, path) == 400  # sent as is: clients would resolve the dots
        assert (await get(port, "/nothing"))[0] == 404
    finally:
        assert await stop(proc) == 0


async def test_reload_reads_the_file_again(site: tuple[Path, Path, int]) -> None:
    root, conf, port = site
    proc = await start(conf)
    try:
        conf.write_text(caddyfile(root, port).replace("p#ss word", "changed"))
        assert proc.stdout is not None
        proc.send_signal(signal.SIGUSR1)  # the role's ExecReload
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"serving" in line
        assert (await get(port, "/"))[0] == 401
        assert (await get(port, "/", auth=("admin", "changed")))[0] == 200
    finally:
        assert await stop(proc) == 0


async def test_an_unknown_directive_is_refused_by_name(site: tuple[Path, Path, int]) -> None:
    root, conf, port = site
    conf.write_text(caddyfile(root, port, extra="  proxy / localhost:9000\n"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CADDY), "-conf", str(conf), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert b"'proxy / localhost:9000' is not supported" in err
