"""``pitrix nodes ssh CLUSTER NODE``: a shell on a node, relayed by pitrixd over a WebSocket.

aiohttp is imported here, inside the command, and nowhere else in the CLI: every other command
stays on the small standard-library client (pitrix/cli/http.py), and a shell session, which lasts
minutes and needs WebSocket framing, pings and closing handshakes done right, pays the import once.

On a terminal the local tty goes to raw mode (every key to the node, Ctrl-C included) only when the
node granted a PTY, and is restored on every way out; SIGWINCH sends the new size. With stdin not a
terminal it is a plain pipe: stdin to the shell, its end sent as end of input, the shell's stdout
and stderr to ours. The exit status is the remote shell's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlencode

from pitrix.cli.client import ApiClient, ApiError

STDOUT, STDERR = 1, 2
NO_STATUS = 255


class ShellEnded(Exception):
    """The session ended without an exit status; the message says why."""


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | str]) -> None:
    """A daemon thread's loop: stdin (a tty, a pipe or a file alike) into the queue; b"" at its end."""
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        loop.call_soon_threadsafe(queue.put_nowait, chunk)
        if not chunk:
            return


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _terminal_size() -> tuple[int, int]:
    """The terminal's size, 80x24 where it has none set (a fresh pty says 0x0)."""
    size = os.get_terminal_size(0)
    return size.columns or 80, size.lines or 24


def ws_url(url: str, path: str) -> str:
    if url.startswith("unix:"):
        return f"http://localhost{path}"
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + path


async def node_ssh(client: ApiClient, cluster: str, node: str) -> int:
    import aiohttp

    tty = os.isatty(0)
    query: dict[str, Any] = {}
    if tty:
        cols, rows = _terminal_size()
        query = {"term": os.environ.get("TERM") or "xterm", "cols": cols, "rows": rows}
    path = f"/v1/clusters/{cluster}/nodes/{node}/ssh" + (f"?{urlencode(query)}" if query else "")
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    connector = (
        aiohttp.UnixConnector(path=client.url[len("unix:") :]) if client.url.startswith("unix:") else None
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            ws = await session.ws_connect(ws_url(client.url, path), headers=headers, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as exc:
            # The refusal's message is in a body the handshake does not read: ask once more
            # without the upgrade, which runs the same checks and answers with it.
            try:
                await client.get(path)
            except ApiError as refusal:
                if refusal.field != "ssh":  # not "WebSocket only": the check that failed, named
                    raise
            raise ApiError(
                exc.status, "error", f"pitrixd refused the shell: {exc.status} {exc.message}"
            ) from None
        async with ws:
            return await _session(ws, tty)


async def _session(ws: Any, tty: bool) -> int:
    import aiohttp

    started = await ws.receive_json(timeout=60)
    pty = bool(started.get("pty")) and tty
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | str] = asyncio.Queue()  # stdin's bytes, and control messages
    threading.Thread(target=_stdin_reader, args=(loop, queue), daemon=True).start()
    saved = None
    if pty:
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
    main = asyncio.current_task()
    assert main is not None

    def resized() -> None:
        cols, rows = _terminal_size()
        queue.put_nowait(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    handled = []
    if tty:
        loop.add_signal_handler(signal.SIGWINCH, resized)
        handled.append(signal.SIGWINCH)
    stopped_by: list[str] = []

    def stop(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        main.cancel()  # out through the finally below: the terminal is restored, the socket closed

    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop, sig)
        handled.append(sig)

    async def forward() -> None:
        while item := await queue.get():
            if isinstance(item, str):
                await ws.send_str(item)
            else:
                await ws.send_bytes(item)
        await ws.send_str(json.dumps({"type": "eof"}))

    sender = asyncio.create_task(forward())
    try:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                fd = STDERR if message.data[:1] == b"\x02" else STDOUT
                _write(fd, message.data[1:])
            elif message.type == aiohttp.WSMsgType.TEXT:
                control = json.loads(message.data)
                if control.get("type") == "exit":
                    status = control.get("status")
                    return status if isinstance(status, int) and 0 <= status < 256 else NO_STATUS
                if control.get("type") == "closed":
                    raise ShellEnded(str(control.get("reason", "pitrixd closed the session")))
        raise ShellEnded("the connection to pitrixd ended before the shell did")
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        raise ShellEnded(f"ended by {stopped_by[0]}; the node's shell is closed with the session") from None
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        for sig in handled:
            loop.remove_signal_handler(sig)
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def report(exc: ShellEnded) -> int:
    print(f"pitrix: {exc}", file=sys.stderr)
    return NO_STATUS
