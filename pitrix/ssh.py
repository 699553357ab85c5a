"""pitrixd's SSH sessions to instances: asyncssh with the host key pinned from the cloud.

The host key comes from the cloud, never from the first connection: ``Provider.host_keys`` reads it
from the cloud's description of the instance or from its console, where cloud-init prints the keys
at first boot; where it looks is the provider's business. An instance whose keys the cloud does not
show before the deadline is refused, and so is a server presenting any other key. A VM is
``running`` a moment before its SSH server listens (and before the cloud shows its keys), so
refused connections and empty answers are retried until a deadline.

:class:`SshSessions` keeps one connection per instance for as long as it is open (one plan step)
and bounds how many instances are talked to at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.providers.base import Instance

if TYPE_CHECKING:
    import asyncssh

CONNECT_TIMEOUT = 60.0
# AES-GCM first, asyncssh's defaults after it (a server without it still gets chacha20-poly1305):
# both are authenticated ciphers of 256-bit keys, but asyncssh's chacha20-poly1305 makes several
# cipher objects per packet (~14 µs a packet here against ~2 µs for AES-256-GCM), which was a
# tenth of pitrixd's CPU while it bootstraps thousands of agents over SSH.
ENCRYPTION_ALGS = "^aes256-gcm@openssh.com,aes128-gcm@openssh.com"
COMMAND_TIMEOUT = 120.0
CONCURRENCY = 16
USER = "root"


class SshError(Exception):
    """An instance could not be reached, or refused us, over SSH; the message names it."""


# Where the host keys of an instance come from: a provider's ``host_keys``.
HostKeys = Callable[[Instance], Awaitable[list[str]]]


def _import_keys(instance: Instance, lines: list[str]) -> list[asyncssh.SSHKey]:
    import asyncssh  # only here: a pitrixd that opens no SSH session never loads the SSH stack

    keys = []
    for line in lines:
        try:
            keys.append(asyncssh.import_public_key(line))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise SshError(
                f"{instance.instance_id}: unreadable SSH host key {line!r} from the cloud: {exc}"
            ) from None
    return keys


async def host_keys(
    instance: Instance, source: HostKeys, *, timeout: float = CONNECT_TIMEOUT
) -> list[asyncssh.SSHKey]:
    """The keys to pin for ``instance``, asked of the cloud until it shows some.

    cloud-init prints the keys late in the first boot, so an empty answer is asked again until
    ``timeout``; then, as with a cloud that never shows them, the instance is refused.
    """
    deadline = time.monotonic() + timeout
    backoff = Backoff(0.2, 5.0)
    while True:
        lines = await source(instance)
        if lines:
            return _import_keys(instance, lines)
        delay = backoff.next()
        if time.monotonic() + delay > deadline:
            raise SshError(
                f"{instance.instance_id}: the cloud showed no SSH host key for it within "
                f"{timeout:.0f}s; refusing to connect"
            )
        await asyncio.sleep(delay)  # cloud-init has not printed them yet: look again


async def connect(
    instance: Instance,
    client_key: asyncssh.SSHKey,
    *,
    timeout: float = CONNECT_TIMEOUT,
    on_retry: Callable[[Exception], None] | None = None,
    keys: HostKeys,
) -> asyncssh.SSHClientConnection:
    """A connection to ``instance`` as root with ``client_key``; refused connections retried.

    ``keys`` (a provider's ``host_keys``) gives the host keys to pin. ``on_retry`` hears of each
    refusal that will be tried again (for logs and tests).
    """
    import asyncssh  # only here: a pitrixd that opens no SSH session never loads the SSH stack

    if not instance.private_ip:
        raise SshError(f"{instance.instance_id}: no address to connect to")
    deadline = time.monotonic() + timeout
    pinned = await host_keys(instance, keys, timeout=timeout)
    backoff = Backoff(0.05, 1.0)
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 a cancel arriving as the connection is made
            # is swallowed by wait_for, and the job then runs on instead of stopping.
            async with asyncio.timeout(max(deadline - time.monotonic(), 1.0)):
                return await asyncssh.connect(
                    instance.private_ip,
                    instance.ssh_port,
                    username=USER,
                    client_keys=[client_key],
                    known_hosts=(pinned, [], []),
                    agent_path=None,
                    config=None,
                    preferred_auth="publickey",
                    encryption_algs=ENCRYPTION_ALGS,
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SshError(
                f"{instance.instance_id}: host key at {instance.private_ip}:{instance.ssh_port} "
                f"is not the one the cloud published ({exc.reason})"
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise SshError(f"{instance.instance_id}: our key was refused ({exc.reason})") from None
        except (ConnectionRefusedError, ConnectionResetError, asyncssh.ConnectionLost) as exc:
            delay = backoff.next()
            if time.monotonic() + delay > deadline:
                raise SshError(
                    f"{instance.instance_id}: SSH at {instance.private_ip}:{instance.ssh_port} "
                    f"not reachable within {timeout:.0f}s ({exc})"
                ) from None
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(delay)  # the server is not listening yet: back off, then again
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise SshError(f"{instance.instance_id}: SSH to {instance.private_ip} failed: {exc}") from None


class SshSessions:
    """Connections to many instances, one each, opened on first use and closed together."""

    def __init__(
        self,
        client_key: asyncssh.SSHKey,
        *,
        concurrency: int = CONCURRENCY,
        connect_timeout: float = CONNECT_TIMEOUT,
        keys: HostKeys,
    ) -> None:
        """``keys``: where the instances' host keys come from (a provider's ``host_keys``)."""
        self.client_key = client_key
        self.keys = keys
        self.connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.log = get_logger("pitrix.ssh")

    async def __aenter__(self) -> SshSessions:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def connection(self, instance: Instance) -> asyncssh.SSHClientConnection:
        lock = self._opening.setdefault(instance.instance_id, asyncio.Lock())
        async with lock:
            conn = self._conns.get(instance.instance_id)
            if conn is None or conn.is_closed():
                conn = await connect(instance, self.client_key, timeout=self.connect_timeout, keys=self.keys)
                self._conns[instance.instance_id] = conn
            return conn

    async def run(
        self,
        instance: Instance,
        command: str,
        input: bytes | None = None,
        *,
        timeout: float = COMMAND_TIMEOUT,
    ) -> tuple[int, str]:
        """``command`` on the instance: its exit status and its output (stdout, then stderr)."""
        import asyncssh  # only here: a pitrixd that opens no SSH session never loads the SSH stack

        async with self._slots:
            conn = await self.connection(instance)
            try:
                result = await conn.run(command, input=input, check=False, encoding=None, timeout=timeout)
            except asyncssh.TimeoutError:
                raise SshError(f"{instance.instance_id}: {command!r} took over {timeout:.0f}s") from None
            except (asyncssh.Error, OSError) as exc:
                self._conns.pop(instance.instance_id, None)
                raise SshError(f"{instance.instance_id}: {command!r} failed: {exc}") from None
        output = _text(result.stdout) + _text(result.stderr)
        status = result.exit_status if result.exit_status is not None else 255
        return status, output

    async def put_file(self, instance: Instance, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to the absolute ``path`` inside the VM, its mode set before any byte.

        The file is made and given its mode before it is filled, so a secret is never readable by
        others, not even for a moment. Only ``mkdir -p``, ``touch``, ``chmod`` and ``cat >`` are
        used: a light-mode VM's shell knows no more.
        """
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"put_file: {path!r} is not an absolute file path")
        directory, target = quote(path.rsplit("/", 1)[0] or "/"), quote(path)
        command = f"mkdir -p {directory} && touch {target} && chmod {mode:o} {target} && cat > {target}"
        status, output = await self.run(instance, command, data)
        if status != 0:
            raise SshError(f"{instance.instance_id}: writing {path} failed ({status}): {output.strip()}")


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def quote(path: str) -> str:
    """A path inside the VM as a shell word under ``$PITRIX_VM_ROOT`` (empty on a real image)."""
    return f'"${{PITRIX_VM_ROOT:-}}"{shlex.quote(path)}'
