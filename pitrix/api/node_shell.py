"""``GET /v1/clusters/{cid}/nodes/{node}/ssh``: an interactive shell on a node, relayed by pitrixd.

pitrixd opens the SSH session itself, with the key pair it created the node with and the host key
pinned from the cloud, so neither the key nor the node's address ever reaches the client; the
client speaks WebSocket to pitrixd only, through the same auth as every other route.

The protocol, kept small enough for a terminal and a pipe alike:

- query ``term``, ``cols``, ``rows``: ask for a PTY of that type and size (none given: no PTY, a
  plain pipe, which is what ``echo cmd | pitrix nodes ssh`` wants);
- client to pitrixd: binary frames are the shell's stdin; text frames are JSON,
  ``{"type": "resize", "cols": C, "rows": R}`` or ``{"type": "eof"}`` (stdin ended);
- pitrixd to client: binary frames whose first byte is 1 (stdout) or 2 (stderr), then the bytes;
  text frames ``{"type": "started", "pty": bool}`` (``pty`` false when the node's SSH server
  refused one: the shell then runs without), and last ``{"type": "exit", "status": N}``.

Every session ends on one path (:meth:`ShellSession.close`), whichever side ends it, an idle or a
total time limit: the SSH channel and connection are closed, which ends the remote shell (sshd
hangs it up), and one audit line says who, which node, when, for how long and how many bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from pitrix.logs import get_logger
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.ssh import SshError, connect

if TYPE_CHECKING:
    import asyncssh

    from pitrix.providers.base import Instance
    from pitrix.runtime.records import Cluster, Node

STDOUT, STDERR = b"\x01", b"\x02"
CHUNK = 32768
TERM_TYPE_MAX = 64


@dataclass(frozen=True, slots=True)
class Terminal:
    type: str
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class ShellLimits:
    """A session with no byte either way for ``idle`` seconds ends, and any after ``total``."""

    idle: float = 900.0
    total: float = 8 * 3600.0


def terminal_of(query: Any) -> Terminal | None:
    """The PTY the client asks for (``term``, ``cols``, ``rows``), refused by field when wrong."""
    if "term" not in query:
        for name in ("cols", "rows"):
            if name in query:
                raise InvalidRequest(f"{name}: only with term (the terminal type)")
        return None
    term = query["term"]
    if not term or len(term) > TERM_TYPE_MAX or not all(c.isalnum() or c in "-_.+" for c in term):
        raise InvalidRequest("term: a terminal type such as xterm-256color")
    sizes = []
    for name, default in (("cols", "80"), ("rows", "24")):
        text = query.get(name, default)
        if not text.isdigit() or not 1 <= int(text) <= 10000:
            raise InvalidRequest(f"{name}: must be a whole number from 1 to 10000")
        sizes.append(int(text))
    return Terminal(term, sizes[0], sizes[1])


async def shell_node(
    service: RuntimeService, cid: str, node_id: str, owner: str | None
) -> tuple[Cluster, Node]:
    """The cluster and node a shell is asked of: NotFound (others' clusters too) or LifecycleError
    (409) as for logs and exec. Reads pitrixd's records only."""
    return await service.active_node(cid, node_id, owner, "a shell opens on its nodes")


async def shell_target(
    service: RuntimeService, cluster: Cluster, node: Node
) -> tuple[Instance, asyncssh.SSHKey, Any]:
    """The node's instance as the cloud shows it, the key pair pitrixd created it with, and where
    its host keys come from (the provider)."""
    provider = await service.provider_for(cluster.runtime)
    found = await provider.describe_instances(instance_ids=[node.instance_id])
    if not found or not found[0].private_ip:
        raise LifecycleError(f"node: the cloud shows no address for {node.node_id} ({node.instance_id})")
    pair = await service.keypairs.get(provider, cluster.owner, cluster.runtime)
    return found[0], pair.private_key, provider.host_keys


class ShellSession:
    """One relayed shell: the SSH process, the WebSocket, the limits and the counts for the audit."""

    def __init__(
        self, ws: web.WebSocketResponse, conn: asyncssh.SSHClientConnection, limits: ShellLimits, audit: Any
    ) -> None:
        self.ws = ws
        self.conn = conn
        self.limits = limits
        self.audit = audit
        self.process: asyncssh.SSHClientProcess[bytes] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        self.last_active = self.started
        self.reason = "the shell exited"

    async def open(self, terminal: Terminal | None) -> bool:
        """Start the shell; with a terminal asked for, with a PTY if the node's server grants one."""
        import asyncssh

        if terminal is not None:
            try:
                self.process = await self.conn.create_process(
                    term_type=terminal.type, term_size=(terminal.cols, terminal.rows), encoding=None
                )
                return True
            except asyncssh.ChannelOpenError:
                pass  # this node's SSH server gives no PTY: the shell runs without one
        self.process = await self.conn.create_process(encoding=None)
        return False

    async def run(self) -> int | None:
        """Relay until the shell exits, the client leaves or a limit passes; the exit status."""
        assert self.process is not None
        outputs = [
            asyncio.create_task(self._pump(self.process.stdout, STDOUT)),
            asyncio.create_task(self._pump(self.process.stderr, STDERR)),
        ]
        exited = asyncio.create_task(self.process.wait_closed())
        client = asyncio.create_task(self._from_client())
        watchdog = asyncio.create_task(self._limits())
        try:
            await asyncio.wait([exited, client, watchdog], return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                # The shell is gone: what it printed last is still on its way out.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*outputs, return_exceptions=True)
                return self.process.exit_status if self.process.exit_status is not None else 255
            if client.done():
                self.reason = "the client left"
            return None
        finally:
            for task in (*outputs, exited, client, watchdog):
                task.cancel()
            await asyncio.gather(*outputs, exited, client, watchdog, return_exceptions=True)

    async def _pump(self, stream: Any, tag: bytes) -> None:
        while True:
            chunk = await stream.read(CHUNK)
            if not chunk:
                return
            self.bytes_out += len(chunk)
            self.last_active = time.monotonic()
            await self.ws.send_bytes(tag + chunk)

    async def _from_client(self) -> None:
        assert self.process is not None
        async for message in self.ws:
            self.last_active = time.monotonic()
            if message.type == WSMsgType.BINARY:
                self.bytes_in += len(message.data)
                self.process.stdin.write(message.data)
            elif message.type == WSMsgType.TEXT:
                self._control(message.data)
            else:
                return

    def _control(self, text: str) -> None:
        assert self.process is not None
        try:
            control = json.loads(text)
        except ValueError:
            return
        if not isinstance(control, dict):
            return
        if control.get("type") == "eof":
            self.process.stdin.write_eof()
        elif control.get("type") == "resize":
            cols, rows = control.get("cols"), control.get("rows")
            if isinstance(cols, int) and isinstance(rows, int) and 0 < cols <= 10000 and 0 < rows <= 10000:
                with contextlib.suppress(Exception):  # no PTY: nothing to resize
                    self.process.change_terminal_size(cols, rows)

    async def _limits(self) -> None:
        while True:
            now = time.monotonic()
            if now - self.started >= self.limits.total:
                self.reason = f"the session reached its {self.limits.total:g}s limit"
                return
            if now - self.last_active >= self.limits.idle:
                self.reason = f"no input or output for {self.limits.idle:g}s"
                return
            wake = min(self.started + self.limits.total, self.last_active + self.limits.idle)
            await asyncio.sleep(max(wake - now, 0.05))

    async def close(self, status: int | None) -> None:
        """The one way out: the remote shell's channel and the connection closed (sshd then ends
        the shell), the exit status to the client if there is one, the audit line."""
        if self.process is not None:
            self.process.close()
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                if status is None:
                    await self.ws.send_json({"type": "closed", "reason": self.reason})
                else:
                    await self.ws.send_json({"type": "exit", "status": status})
                await self.ws.close()
        self.audit.info(
            "node shell ended",
            reason=self.reason,
            exit_status=status,
            seconds=round(time.monotonic() - self.started, 3),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )


async def node_shell(
    request: web.Request, service: RuntimeService, identity: Any, limits: ShellLimits
) -> web.StreamResponse:
    """The route: every check before the upgrade, so a refusal is a plain 4xx with its message."""
    cid, node_id = request.match_info["cid"], request.match_info["node"]
    terminal = terminal_of(request.query)
    cluster, node = await shell_node(service, cid, node_id, identity.scope)
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise InvalidRequest(
            "ssh: this route speaks WebSocket only (Connection: Upgrade, Upgrade: websocket)"
        )
    instance, key, host_keys = await shell_target(service, cluster, node)
    audit = get_logger("pitrix.api.audit").bind(
        cluster_id=cid, node=node_id, owner=identity.owner, admin=identity.admin, kind="ssh"
    )
    try:
        conn = await connect(instance, key, keys=host_keys, timeout=30.0)
    except SshError as exc:
        audit.info("node shell refused", error=str(exc))
        raise _bad_gateway(str(exc)) from None
    return await serve_shell(request, conn, terminal, limits, audit.bind(instance_id=instance.instance_id))


async def serve_shell(
    request: web.Request,
    conn: asyncssh.SSHClientConnection,
    terminal: Terminal | None,
    limits: ShellLimits,
    audit: Any,
) -> web.WebSocketResponse:
    """Relay a shell of the open connection ``conn`` to the request's WebSocket, until it ends;
    the connection is closed whatever happens."""
    import asyncssh

    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
    session = ShellSession(ws, conn, limits, audit)
    status: int | None = None
    try:
        try:
            pty = await session.open(terminal)
        except (asyncssh.Error, OSError) as exc:
            session.reason = f"the node refused a shell: {exc}"
            raise _bad_gateway(f"node: {exc}") from None
        audit.info("node shell started", pty=pty, term=terminal.type if terminal else None)
        await ws.prepare(request)
        await ws.send_json({"type": "started", "pty": pty})
        status = await session.run()
    finally:
        await session.close(status)
    return ws


def _bad_gateway(message: str) -> web.HTTPBadGateway:
    return web.HTTPBadGateway(
        text=json.dumps({"error": {"code": "ssh_failed", "message": message}}),
        content_type="application/json",
    )
