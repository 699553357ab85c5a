"""Go metad (openpitrix/metad) measured the way bench/metad_fanout.py measures pitrix-metad.

Its etcdv3 backend on the same etcd (mutual TLS to etcd, as pitrix-metad's), plain HTTP to its
clients as it has no TLS of its own; instances are told apart by ``X-Forwarded-For`` (its ``-xff``
switch), each instance one keep-alive connection. A round: every instance's ``GET /self?wait=true
&prev_version=V`` held, one management ``PUT /v1/data/clusters/c1/env``, until the last answer.
metad offers no count of held requests, so a round waits a moment for them to be held before the
write (longer at N = 1,000). Its long-poll answers carry the version from before the wait (a known
flaw, ANCHORS.md), so each instance reads its current version with a plain ``GET /self`` between
rounds, outside the timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from pitrix.store.tls import EtcdTLS

LISTEN_IP = "127.109.0.3"
PREFIX = "/gometad"


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _ip(n: int) -> str:
    return f"10.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


class XffConn:
    """One instance's keep-alive connection, spoken by hand (the client must cost less than metad)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str) -> None:
        self.reader, self.writer, self.ip = reader, writer, ip

    def send(self, target: str) -> None:
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: metad\r\nAccept: application/json\r\n"
            f"X-Forwarded-For: {self.ip}\r\n\r\n".encode()
        )

    async def answer(self) -> tuple[int, int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = version = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-metad-version":
                version = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, version, await self.reader.readexactly(length)
        body = b""
        while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
            body += await self.reader.readexactly(size + 2)
        await self.reader.readuntil(b"\r\n")
        return status, version, body


class GoMetad:
    """A Go metad process on the bench's etcd, with its management API."""

    def __init__(self, binary: Path, tmp: Path, etcd_url: str, tls: EtcdTLS) -> None:
        self.binary, self.tmp, self.etcd_url, self.tls = binary, tmp, etcd_url, tls
        self.port, self.manage_port = _free_port(LISTEN_IP), _free_port(LISTEN_IP)
        self.process: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        log = (self.tmp / "go-metad.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(self.binary),
            "-backend", "etcdv3", "-nodes", self.etcd_url, "-prefix", PREFIX, "-xff",
            "-client_ca_keys", str(self.tls.ca_file), "-client_cert", str(self.tls.cert_file),
            "-client_key", str(self.tls.key_file),
            "-listen", f"{LISTEN_IP}:{self.port}", "-listen_manage", f"{LISTEN_IP}:{self.manage_port}",
            "-log_level", "warning",
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self.http = aiohttp.ClientSession(f"http://{LISTEN_IP}:{self.manage_port}")
        deadline = time.monotonic() + 60
        while True:  # no ready line: its management port answering is its readiness
            if self.process.returncode is not None:
                raise RuntimeError(f"Go metad exited ({self.process.returncode}): {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get("/health") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Go metad not answering in 60 s: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def log_tail(self) -> str:
        return " | ".join((self.tmp / "go-metad.log").read_text(errors="replace").splitlines()[-5:])

    async def put(self, path: str, body: Any) -> None:
        assert self.http is not None
        async with self.http.put(path, data=json.dumps(body)) as response:
            if response.status >= 300:
                raise RuntimeError(f"Go metad PUT {path}: {response.status} {await response.text()}")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _refresh(conns: list[XffConn]) -> list[int]:
    versions = []
    for conn in conns:
        conn.send("/self")
        status, version, body = await conn.answer()
        if status != 200:
            raise RuntimeError(f"Go metad GET /self for {conn.ip}: {status} {body[:200]!r}")
        versions.append(version)
    return versions


async def fanout(
    binary: Path,
    tmp: Path,
    etcd_url: str,
    tls: EtcdTLS,
    counts: list[int],
    rounds: dict[int, int],
    idle: int = 0,
) -> tuple[dict[int, list[float]], float, float]:
    """Per N, each round's write → last answer (ms); Go metad's RSS (MiB) after the rounds; and,
    with ``idle``, the KiB each of that many idle long-polls adds to its RSS (else 0)."""
    metad = GoMetad(binary, tmp, etcd_url, tls)
    results: dict[int, list[float]] = {}
    value = 0
    per_idle = 0.0
    try:
        await metad.start()
        await metad.put("/v1/data", {"clusters": {"c1": {"env": {"web": {"workers": "0"}}}}})
        mapped = max(*counts, idle)
        await metad.put("/v1/mapping", {_ip(n): {"cluster": "/clusters/c1"} for n in range(mapped)})
        for count in counts:
            conns = []
            for n in range(count):
                reader, writer = await asyncio.open_connection(LISTEN_IP, metad.port)
                conns.append(XffConn(reader, writer, _ip(n)))
            try:
                figures = []
                for _ in range(rounds[count]):
                    versions = await _refresh(conns)
                    value += 1
                    figures.append(await _round(metad, conns, versions, value, count))
                results[count] = figures
            finally:
                for conn in conns:
                    conn.writer.close()
        rss = _rss_mib(metad.pid)
        if idle:
            per_idle = await _idle(metad, idle)
    finally:
        await metad.stop()
    return results, rss, per_idle


async def _idle(metad: GoMetad, count: int) -> float:
    """KiB of Go metad's RSS per idle long-poll, ``count`` of them held. metad has no count of held
    requests: its RSS is read once it has stopped growing (two readings 0.5 s apart agree to 1%)."""
    probe = XffConn(*await asyncio.open_connection(LISTEN_IP, metad.port), _ip(0))
    (version,) = await _refresh([probe])
    probe.writer.close()
    before = _rss_mib(metad.pid)
    writers = []
    sem = asyncio.Semaphore(64)

    async def hold(n: int) -> None:
        async with sem:
            conn = XffConn(*await asyncio.open_connection(LISTEN_IP, metad.port), _ip(n))
            conn.send(f"/self?wait=true&prev_version={version}")
            await conn.writer.drain()
            writers.append(conn.writer)

    try:
        await asyncio.gather(*(hold(n) for n in range(count)))
        during, last = _rss_mib(metad.pid), 0.0
        deadline = time.monotonic() + 60
        while abs(during - last) > during / 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            last, during = during, _rss_mib(metad.pid)
    finally:
        for writer in writers:
            writer.close()
    per = (during - before) * 1024 / count
    print(f"  Go metad idle: {count} waiters, RSS {before:.1f} → {during:.1f} MiB ({per:.1f} KiB each)")
    return per


async def _round(metad: GoMetad, conns: list[XffConn], versions: list[int], value: int, count: int) -> float:
    done: list[float] = []
    marker = f'"workers":"{value}"'.encode()

    async def poll(i: int) -> None:
        conns[i].send(f"/self?wait=true&prev_version={versions[i]}")
        status, _version, body = await conns[i].answer()
        done.append(time.perf_counter())
        if status != 200 or marker not in body:
            raise RuntimeError(f"Go metad answered {status}: {body[:200]!r}")

    tasks = [asyncio.create_task(poll(i)) for i in range(len(conns))]
    await asyncio.sleep(1.0 if count >= 1000 else 0.2)  # held by now: metad has no count of them
    start = time.perf_counter()
    await metad.put("/v1/data/clusters/c1/env/web", {"workers": str(value)})
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return (max(done) - start) * 1000


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
