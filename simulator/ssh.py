"""A VM's SSH server: asyncssh in the simulator's process, listening on the VM's own address.

Logins are by public key only, checked against the key pairs attached to the instance at the
moment of the login (so AttachKeyPairs takes effect on the next connection, as writing
``authorized_keys`` would). Any user name is accepted and is root: the simulator runs as one
ordinary user. Each session runs one command:

- full mode: ``sh -c <command>`` as a real process in a session of its own, cwd = the VM root,
  the VM's environment (so stop, terminate and crash find and kill it like any VM process); in a
  sandboxed VM the command enters the VM's namespaces and root first (``nsenter``);
- light mode: :mod:`simulator.light_shell`, a tiny in-process command set (no process at all).

There is no SFTP or SCP: files are written with ``cat > file``, which both modes support. The
host key is generated at the VM's first boot, kept in its root, and published on the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import asyncssh

from pitrix.logs import get_logger
from simulator.light_shell import StartAgent, run_light

HOST_KEY_PATH = "etc/ssh/ssh_host_ed25519_key"
CHUNK = 65536

AcceptedKeys = Callable[[], list[asyncssh.SSHKey]]
Delay = Callable[[], float]


def load_host_key(root: Path) -> asyncssh.SSHKey:
    """The VM's host key, generated and saved under its root the first time (as sshd's first boot)."""
    path = root / HOST_KEY_PATH
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="root@sim")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))
    (root / (HOST_KEY_PATH + ".pub")).write_bytes(key.export_public_key("openssh"))
    return key


def console_text(instance_id: str, host_key: asyncssh.SSHKey) -> str:
    """What cloud-init prints on a VM's console about its host keys, which clients pin."""
    public = host_key.convert_to_public()
    kind, blob = public.export_public_key("openssh").decode().split()[:2]
    bits = 256 if kind == "ssh-ed25519" else 0
    return (
        f"[sim] {instance_id} booted\n"
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"{bits} {public.get_fingerprint('sha256')} root@{instance_id} (ED25519)\n"
        "-----END SSH HOST KEY FINGERPRINTS-----\n"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        f"{kind} {blob} root@{instance_id}\n"
        "-----END SSH HOST KEY KEYS-----\n"
    )


class _Auth(asyncssh.SSHServer):
    """Public-key logins against the instance's attached keys, nothing else."""

    def __init__(self, owner: VmSshServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        wanted = key.public_data
        return any(k.public_data == wanted for k in self._owner.accepted_keys())

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        """A local port forward (``ssh -L``) to this VM's own address only, as a tunnel to one of
        its services (metad's management port); never onwards to anywhere else."""
        return dest_host == self._owner.ip and 0 < dest_port < 65536


class VmSshServer:
    """One VM's SSH listener and its open connections."""

    def __init__(
        self,
        *,
        instance_id: str,
        ip: str,
        port: int,
        root: Path,
        environ: dict[str, str],
        host_key: asyncssh.SSHKey,
        accepted_keys: AcceptedKeys,
        command_delay: Delay,
        light: bool,
        start_agent: StartAgent | None = None,
        enter: Callable[[], list[str]] | None = None,
    ) -> None:
        self.enter = enter  # a sandboxed VM: the argv prefix that runs a command inside it
        self.start_agent = start_agent  # light mode: what ``pitrix-agent -config-file`` does
        self.instance_id = instance_id
        self.ip = ip
        self.port = port
        self.root = root
        self.environ = environ
        self.host_key = host_key
        self.accepted_keys = accepted_keys
        self.command_delay = command_delay
        self.light = light
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._log = get_logger("simulator.ssh", instance_id=instance_id, ip=ip)

    async def start(self) -> None:
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _Auth(self),
                host=self.ip,
                port=self.port,
                server_host_keys=[self.host_key],
                process_factory=self._session,
                encoding=None,
                allow_scp=False,
                sftp_factory=None,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_pty=False,
                reuse_address=True,
            )
        except OSError as exc:
            raise OSError(f"ssh: cannot listen on {self.ip}:{self.port}: {exc.strerror}") from exc

    async def stop(self) -> None:
        """Stop listening and drop every open connection (a powered-off VM answers nothing)."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or "sh"
        delay = self.command_delay()
        if delay > 0:
            await asyncio.sleep(delay)  # the "slow commands" fault: the VM takes this long to react
        try:
            if self.light:
                code = await run_light(
                    command, process, self.root, self.instance_id, ip=self.ip, start_agent=self.start_agent
                )
            else:
                code = await self._run_process(command, process)
        except (asyncssh.Error, ConnectionError, BrokenPipeError) as exc:
            self._log.info("ssh.session_lost", command=command, error=str(exc))
            return
        except Exception as exc:  # the VM's fault, not the client's: say so, and end the session
            self._log.exception("ssh.command_failed", command=command)
            process.stderr.write(f"sim: {exc!r}\n".encode())
            process.exit(255)
            return
        self._log.debug("ssh.command", command=command, exit_code=code)
        process.exit(code)

    async def _run_process(self, command: str, process: asyncssh.SSHServerProcess[bytes]) -> int:
        prefix = self.enter() if self.enter is not None else []
        proc = await _Spawned.start(command, self.root, self.environ, prefix)
        feed = asyncio.create_task(_feed(process.stdin, proc))
        work = asyncio.ensure_future(_communicate(proc, process))
        lost = asyncio.ensure_future(process.channel.wait_closed())
        try:
            await asyncio.wait([work, lost], return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client went away mid-command: so does the command
                raise ConnectionError("ssh: the client closed the session")
            code = work.result()
        finally:
            for task in (feed, work, lost):
                task.cancel()
            await asyncio.gather(feed, work, lost, return_exceptions=True)
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
            await proc.wait()
        return code if code >= 0 else 128 - code


class _Spawned:
    """``sh -c command`` started by the stdlib, its pipes served by threads of its own.

    uvloop leaves duplicates of a child's stdio descriptors open in the child (above fd 2), so a
    background job the command starts (``nohup pitrix-agent ... &``, output redirected) would still
    hold the session's output open and the session would never end, as it does not on a real VM;
    ``subprocess.Popen`` closes every other descriptor in the child. The pipes stay with the Popen
    object and one thread each (a loop's pipe transport would close them a second time).
    """

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        self.popen = popen
        self.stdout: asyncio.Queue[bytes] = asyncio.Queue()
        self.stderr: asyncio.Queue[bytes] = asyncio.Queue()
        self._stdin: queue.Queue[bytes | None] = queue.Queue()
        self._waited: asyncio.Future[int] | None = None
        for pipe, chunks in ((popen.stdout, self.stdout), (popen.stderr, self.stderr)):
            threading.Thread(target=_pump_out, args=(pipe, loop, chunks), daemon=True).start()
        threading.Thread(target=_pump_in, args=(popen.stdin, self._stdin), daemon=True).start()

    @classmethod
    async def start(cls, command: str, cwd: Path, env: dict[str, str], prefix: list[str]) -> _Spawned:
        popen = await asyncio.to_thread(
            subprocess.Popen,
            [*prefix, "sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        return cls(popen, asyncio.get_running_loop())

    def write(self, data: bytes) -> None:
        self._stdin.put(data)

    def close_stdin(self) -> None:
        self._stdin.put(None)

    async def wait(self) -> int:
        if self._waited is None:
            self._waited = asyncio.ensure_future(asyncio.to_thread(self.popen.wait))
        return await asyncio.shield(self._waited)


def _pump_out(pipe: BinaryIO, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """A thread: the command's output into ``chunks`` until EOF (then b"")."""
    try:
        while True:
            try:
                data = os.read(pipe.fileno(), CHUNK)
            except OSError:
                data = b""
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(chunks.put_nowait, data)
            if not data:
                return
    finally:
        pipe.close()


def _pump_in(pipe: BinaryIO, chunks: queue.Queue[bytes | None]) -> None:
    """A thread: what the client sends, to the command's stdin; None closes it."""
    try:
        while (data := chunks.get()) is not None:
            pipe.write(data)
            pipe.flush()
    except OSError:
        return  # the command closed its stdin or exited
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


async def _communicate(proc: _Spawned, process: asyncssh.SSHServerProcess[bytes]) -> int:
    await asyncio.gather(_drain(proc.stdout, process.stdout), _drain(proc.stderr, process.stderr))
    return await proc.wait()


async def _feed(source: asyncssh.SSHReader[bytes], sink: _Spawned) -> None:
    """The client's stdin to the command's; EOF from the client closes the command's stdin."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
    finally:
        sink.close_stdin()


async def _drain(source: asyncio.Queue[bytes], sink: asyncssh.SSHWriter[bytes]) -> None:
    while data := await source.get():
        sink.write(data)
        await sink.drain()
