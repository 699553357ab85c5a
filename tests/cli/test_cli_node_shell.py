"""``pitrix nodes ssh`` on a terminal, against pitrixd's relay and an SSH server that grants PTYs.

The simulator's VMs grant no PTY (tests/e2e/test_custom_services.py covers the pipe and the
no-PTY terminal there); this server, written here, does, and reports what it was given: the
terminal type and size, each resize. The CLI runs in a child process on a pty of ours, so its raw
mode, its SIGWINCH handler and the restored terminal are seen from outside, as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pitrix.api.node_shell import ShellLimits, serve_shell, terminal_of
from pitrix.logs import get_logger

ROOT = Path(__file__).resolve().parents[2]
RUN_CLI = """
import asyncio, sys
from pitrix.cli.client import ApiClient
from pitrix.cli.node_ssh import ShellEnded, node_ssh, report

async def main() -> int:
    async with ApiClient(sys.argv[1]) as client:
        try:
            return await node_ssh(client, "cl-1", "web-1")
        except ShellEnded as exc:
            return report(exc)

sys.exit(asyncio.run(main()))
"""


class _Auth(asyncssh.SSHServer):
    """Any password: the login is not what this test is about (pitrixd's own is, in e2e)."""

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return True


class Shell:
    """The node's side: a shell-like session that says what its PTY is, and when it closed."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def __call__(self, process: asyncssh.SSHServerProcess[str]) -> None:
        try:
            width, height = process.get_terminal_size()[:2]
            process.stdout.write(f"term={process.get_terminal_type()} size={width}x{height}\r\n")
            while True:
                try:
                    line = await process.stdin.readline()
                except asyncssh.TerminalSizeChanged as change:
                    process.stdout.write(f"resized {change.width}x{change.height}\r\n")
                    continue
                if not line or line.startswith("exit"):
                    process.exit(int(line.split()[1]) if line else 0)
                    return
                process.stdout.write(f"ran {line.strip()}\r\n")
        finally:
            self.ended.set()


@pytest.fixture
async def node() -> AsyncIterator[tuple[Shell, int]]:
    shell = Shell()
    server = await asyncssh.create_server(
        _Auth,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        authorized_client_keys=None,
        process_factory=shell,
        allow_pty=True,
    )
    try:
        yield shell, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def relay(port: int, limits: ShellLimits) -> TestServer:
    async def route(request: web.Request) -> web.StreamResponse:
        conn = await asyncssh.connect(
            "127.0.0.1", port, username="root", known_hosts=None, client_keys=None, password="x"
        )
        return await serve_shell(request, conn, terminal_of(request.query), limits, get_logger("test"))

    app = web.Application()
    app.router.add_get("/v1/clusters/cl-1/nodes/web-1/ssh", route)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def read_until(master: int, text: bytes, seen: bytearray) -> None:
    loop = asyncio.get_running_loop()
    while text not in seen:
        ready = loop.create_future()
        loop.add_reader(master, ready.set_result, None)
        try:
            await asyncio.wait_for(ready, 30)
        finally:
            loop.remove_reader(master)
        seen += os.read(master, 65536)


@contextlib.asynccontextmanager
async def cli_on_a_pty(url: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, int, list[Any]]]:
    """The CLI on a fresh pty (100x30), with the pty's settings from before it started."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-test"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_CLI, url, stdin=slave, stdout=slave, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        yield process, master, slave, before
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)
        os.close(slave)


async def test_a_terminal_gets_a_pty_its_size_and_raw_mode_restored_after(node: tuple[Shell, int]) -> None:
    shell, port = node
    server = await relay(port, ShellLimits())
    try:
        async with cli_on_a_pty(str(server.make_url(""))) as (process, master, slave, before):
            seen = bytearray()
            await read_until(master, b"term=xterm-test size=100x30", seen)
            raw = termios.tcgetattr(slave)
            assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG), "the terminal is not raw"

            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            process.send_signal(signal.SIGWINCH)
            await read_until(master, b"resized 120x40", seen)
            os.write(master, b"uptime\r")
            await read_until(master, b"ran uptime", seen)
            os.write(master, b"exit 7\r")
            assert await asyncio.wait_for(process.wait(), 30) == 7
            assert termios.tcgetattr(slave) == before
            assert process.stderr is not None and await process.stderr.read() == b""
        await asyncio.wait_for(shell.ended.wait(), 30)
    finally:
        await server.close()


async def test_an_idle_session_is_closed_and_its_shell_ended(node: tuple[Shell, int]) -> None:
    shell, port = node
    server = await relay(port, ShellLimits(idle=0.5))
    try:
        async with cli_on_a_pty(str(server.make_url(""))) as (process, _, slave, before):
            assert await asyncio.wait_for(process.wait(), 30) == 255
            assert process.stderr is not None
            assert (await process.stderr.read()).strip() == b"pitrix: no input or output for 0.5s"
            assert termios.tcgetattr(slave) == before
        await asyncio.wait_for(shell.ended.wait(), 30)
    finally:
        await server.close()


async def test_a_terminated_cli_restores_the_terminal_and_ends_the_shell(node: tuple[Shell, int]) -> None:
    shell, port = node
    server = await relay(port, ShellLimits())
    try:
        async with cli_on_a_pty(str(server.make_url(""))) as (process, master, slave, before):
            await read_until(master, b"term=xterm-test", bytearray())
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 30) == 255
            assert process.stderr is not None
            assert (await process.stderr.read()).startswith(b"pitrix: ended by SIGTERM")
            assert termios.tcgetattr(slave) == before
        await asyncio.wait_for(shell.ended.wait(), 30)
    finally:
        await server.close()
