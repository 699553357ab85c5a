"""Benchmark: pitrix-metad with mutual TLS, beside raw etcd watches and metad's published figures.

Run: ``.venv/bin/python -m bench.metad_fanout`` (``--quick`` for a short run, ``--idle N`` to choose
the idle-waiter count). It starts an etcd and a ``pitrix-metad`` process with ``--tls-cert/--tls-key
/--client-ca``; every client runs in this process (so metad's RSS is metad's alone), each instance
with its own certificate and keep-alive connection. Figures:

- fan-out: one management write (``PUT /v1/data/clusters/c1/env/web/...``, itself over mTLS) → the
  last of N ``GET /self?wait=true&prev_version=V`` answered, N = 1, 100, 1,000;
- raw etcd: one put → the last of N aetcd watchers (pitrix.store's watch) notified, same etcd;
- idle waiters: metad's RSS holding N idle long-polls (10,000 when ``ulimit -n`` allows);
- ``GET /self`` per second from 50 concurrent instances, and per second of metad's CPU (per core);
- idle long-polls held per GiB of metad's memory (from the per-waiter figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import peer_metad, peers
from pitrix import aio, logs, pki
from pitrix.metad.client import MetadManagementClient
from pitrix.store import Op, Store
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.tls import EtcdTLS

TITLE = "pitrix-metad with mutual TLS: fan-out, idle long-polls, GET /self"
LISTEN_IP = "127.109.0.1"
GET_CLIENTS = 50
# Peers' figures (ANCHORS.md): (median, p99) ms by N, metad's idle memory, its GET /self per second.
ANCHOR_FANOUT: dict[int, tuple[float, float]] = {1: (102.6, 103.0), 100: (111.0, 117.0), 1000: (184.0, 250.0)}
ANCHOR_ETCD: dict[int, tuple[float, float]] = {1: (1.4, 4.8), 1000: (40.0, 62.0)}
ANCHOR_IDLE: tuple[int, float] = (10000, 371.0)
ANCHOR_GETS = 9854
TARGET_FANOUT: dict[int, str] = {1: "median < 5", 1000: "p99 < 100"}
TARGET_IDLE_MIB = 150.0


def _ip(n: int) -> str:
    return f"127.{110 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def _mib(kib: int) -> float:
    return kib / 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (a steadier figure than latency under load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


class Conn:
    """One instance's keep-alive HTTPS connection, spoken by hand: the bench's client side must
    cost far less than metad's, or the figures would measure the client (aiohttp's client parses
    an answer in about as long as metad takes to produce it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str, context: Any) -> Conn:
        host, port = url.split("://")[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        return cls(reader, writer, f"{host}:{port}")

    def send(self, target: str) -> None:
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n\r\n".encode()
        )

    async def answer(self) -> tuple[int, int, bytes]:
        """(status, X-Metad-Version, body) of the next answer on this connection."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = version = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-metad-version":
                version = int(value)
        return status, version, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class World:
    pki_dir: Path
    ca: pki.CertificateAuthority
    instance_url: str
    manage: MetadManagementClient
    pid: int
    store: Store
    identities: int = 0

    def context(self, n: int) -> Any:
        return pki.client_context(
            self.pki_dir / "ca.pem", self.pki_dir / f"i-{n}.crt", self.pki_dir / f"i-{n}.key"
        )

    async def healthz(self) -> dict[str, Any]:
        return await self.manage.healthz()

    async def wait_until_held(self, most: int, timeout: float = 300.0) -> None:
        """Until metad holds at most ``most`` requests (the bench's hang-ups reached it)."""
        deadline = time.monotonic() + timeout
        while (await self.healthz())["waiters"] > most:
            if time.monotonic() > deadline:
                raise TimeoutError(f"metad still holds more than {most} waiters")
            await asyncio.sleep(0.05)

    async def wait_waiters(self, wanted: int, timeout: float = 300.0) -> None:
        """metad's own count of held requests (its /healthz), polled: the bench has no other view of it."""
        deadline = time.monotonic() + timeout
        while (await self.healthz())["waiters"] < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"metad holds fewer than {wanted} waiters")
            await asyncio.sleep(0.005)


def _issue(ca: pki.CertificateAuthority, directory: Path, first: int, last: int) -> None:
    for n in range(first, last):
        ca.issue_instance(f"i-{n}", "usr-bench", "c1").write(
            directory / f"i-{n}.crt", directory / f"i-{n}.key"
        )


async def _register(world: World, first: int, last: int) -> None:
    """Certificates and mappings for instances [first, last): straight into etcd, 25 per transaction."""
    await asyncio.to_thread(_issue, world.ca, world.pki_dir, first, last)
    for start in range(first, last, 25):
        ops = []
        for n in range(start, min(last, start + 25)):
            fields = {"instance_id": f"i-{n}", "cluster_id": "c1", "role": "web", "ip": _ip(n)}
            ops += [Op("put", f"/_pitrix/mapping/i-{n}/{k}", v.encode()) for k, v in fields.items()]
        await world.store.txn([], ops)
    world.identities = max(world.identities, last)


async def _fanout_round(world: World, conns: list[Conn], versions: list[int], value: int) -> float:
    done: list[float] = []
    marker = f'"workers":"{value}"'.encode()

    async def poll(i: int) -> None:
        conns[i].send(f"/self?wait=true&prev_version={versions[i]}")
        status, version, body = await conns[i].answer()
        done.append(time.perf_counter())
        if status != 200 or marker not in body:
            raise RuntimeError(f"unexpected answer {status}: {body[:200]!r}")
        versions[i] = version

    before = (await world.healthz())["waiters"]
    tasks = [asyncio.create_task(poll(i)) for i in range(len(conns))]
    await world.wait_waiters(before + len(conns))
    start = time.perf_counter()
    await world.manage.put_data("/clusters/c1/env/web/workers", value)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return (max(done) - start) * 1000


async def _connect(world: World, count: int, first: str = "") -> list[tuple[Conn, int]]:
    """``count`` instances' connections, each with ``first`` asked and answered (its version) if given."""
    sem = asyncio.Semaphore(64)

    async def one(n: int) -> tuple[Conn, int]:
        async with sem:
            conn = await Conn.open(world.instance_url, world.context(n))
            if not first:
                return conn, 0
            conn.send(first)
            return conn, (await conn.answer())[1]

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def fanout(world: World, counts: list[int], rounds: dict[int, int]) -> dict[int, tuple[float, float]]:
    results = {}
    value = 0
    for count in counts:
        # One handshake per instance before, then keep-alive. Each connection's first request goes
        # out as soon as it is open: metad closes a connection that sends no request headers within
        # its header timeout (10 s), less than opening 1,000 mTLS connections takes on a busy host.
        opened = await _connect(world, count, first="/self")
        conns = [conn for conn, _ in opened]
        try:
            versions = [version for _, version in opened]
            figures = []
            cpu = _cpu_seconds(world.pid)
            for _ in range(rounds[count]):
                value += 1
                figures.append(await _fanout_round(world, conns, versions, value))
            cpu = _cpu_seconds(world.pid) - cpu
        finally:
            for conn in conns:
                conn.close()
        results[count] = _stats(figures)
        # metad's CPU per long-poll, holding it and answering it (plus the rounds' few other requests).
        per_poll = cpu / (rounds[count] * count) * 1e6
        print(
            f"  fan-out N={count}: median {results[count][0]:.1f} ms, p99 {results[count][1]:.1f} ms"
            f" (metad CPU {per_poll:.0f} µs per long-poll)",
            flush=True,
        )
    return results


async def etcd_watch(
    store: Store, counts: list[int], rounds: dict[int, int]
) -> dict[int, tuple[float, float]]:
    """One put → the last of N watchers of its key notified (each watcher its own watch stream)."""
    results = {}
    for count in counts:
        figures = []
        for r in range(rounds[count]):
            _, revision = await store.get_prefix("/etcdbench/")
            got: list[float] = []
            ready = [asyncio.Event() for _ in range(count)]

            async def watch(
                i: int, rev: int = revision, ready: list[asyncio.Event] = ready, got: list[float] = got
            ) -> None:
                iterator = store.watch_prefix("/etcdbench/", rev + 1)
                ready[i].set()
                async for _batch in iterator:
                    got.append(time.perf_counter())
                    break
                closer = getattr(iterator, "aclose", None)
                if closer is not None:
                    await closer()

            tasks = [asyncio.create_task(watch(i)) for i in range(count)]
            for event in ready:
                await event.wait()
            # The watches are created lazily by the iterator; let them reach etcd first.
            await asyncio.sleep(0.5 if count > 100 else 0.1)
            start = time.perf_counter()
            await store.put("/etcdbench/key", str(r))
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            figures.append((max(got) - start) * 1000)
        results[count] = _stats(figures)
        print(
            f"  etcd watch N={count}: median {results[count][0]:.1f} ms, p99 {results[count][1]:.1f} ms",
            flush=True,
        )
    return results


async def idle(world: World, count: int) -> tuple[int, float, float]:
    """metad's RSS with ``count`` idle long-polls held: (count, total MiB, KiB per waiter)."""
    if world.identities < count:
        await _register(world, world.identities, count)
    base_waiters = (await world.healthz())["waiters"]
    # etcd's revision, not metad's: the mappings just registered may not be in its mirror yet, and a
    # prev_version older than them would be answered at once instead of held.
    _, revision = await world.store.get_prefix("/_pitrix/mapping/i-0/")
    before = _rss_kib(world.pid)
    host, port = world.instance_url.split("://")[1].rsplit(":", 1)
    streams = []
    contexts = [world.context(n) for n in range(count)]
    request = (
        f"GET /self?wait=true&prev_version={revision} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    sem = asyncio.Semaphore(64)

    async def hold(n: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection(host, int(port), ssl=contexts[n])
            writer.write(request)
            await writer.drain()
            streams.append((reader, writer))

    await asyncio.gather(*(hold(n) for n in range(count)))
    await world.wait_waiters(base_waiters + count)
    during = _rss_kib(world.pid)
    for _, writer in streams:
        writer.close()
    # Let metad see every hang-up before the teardown: stopping it while thousands of closes are
    # still in flight made its shutdown answer (and log) each dead long-poll in turn.
    await world.wait_until_held(base_waiters)
    per_waiter = (during - before) / count
    print(
        f"  idle: {count} waiters, metad RSS {_mib(before):.1f} → {_mib(during):.1f} MiB "
        f"({per_waiter:.1f} KiB each)",
        flush=True,
    )
    return count, _mib(during), per_waiter


async def gets_per_second(world: World, clients: int, seconds: float) -> tuple[float, float]:
    """GET /self answers per second of wall time, and per second of metad's CPU (per core: metad
    is one process, sharing the cores with the clients here)."""
    conns = [conn for conn, _ in await _connect(world, clients)]
    count = 0
    stop = time.perf_counter() + seconds

    async def loop(conn: Conn) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            conn.send("/self")
            status, _, body = await conn.answer()
            if status != 200:
                raise RuntimeError(f"GET /self answered {status}: {body[:200]!r}")
            count += 1

    try:
        start = time.perf_counter()
        cpu = _cpu_seconds(world.pid)
        await asyncio.gather(*(loop(c) for c in conns))
        rate = count / (time.perf_counter() - start)
        per_core = count / max(_cpu_seconds(world.pid) - cpu, 1e-9)
    finally:
        for conn in conns:
            conn.close()
    print(f"  GET /self: {rate:.0f}/s ({clients} clients), {per_core:.0f} per metad CPU-second", flush=True)
    return rate, per_core


async def _start_metad(
    tmp: Path, etcd_url: str, etcd_tls: EtcdTLS, profile: str | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """metad's log goes to a file of its own, not to this script's stderr: its lines are no figures,
    and a pipe the runner closes must not turn metad's last log line into a BrokenPipe traceback.
    With --profile metad runs under cProfile, which writes its stats when metad exits on SIGTERM."""
    wrapper = ["-m", "cProfile", "-o", profile] if profile else []
    log = (tmp / "metad.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, *wrapper, "-m", "pitrix.metad.main",
        "--listen-ip", LISTEN_IP, "--instance-port", "0", "--manage-port", "0",
        "--etcd", etcd_url, "--wait-timeout", "900", "--log-level", "warning",
        # Opening 1,000 mTLS connections on a loaded host took longer than the default keep-alive
        # (60 s): the first connections opened were closed before the first round began.
        "--idle-timeout", "900",
        "--etcd-cacert", str(etcd_tls.ca_file), "--etcd-cert", str(etcd_tls.cert_file),
        "--etcd-key", str(etcd_tls.key_file),
        "--tls-cert", str(tmp / "server.crt"), "--tls-key", str(tmp / "server.key"),
        "--client-ca", str(tmp / "ca.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if not line:
        await process.wait()
        tail = (tmp / "metad.log").read_text(errors="replace").splitlines()[-10:]
        raise RuntimeError(
            f"pitrix-metad exited ({process.returncode}) before it was ready:\n" + "\n".join(tail)
        )
    return process, json.loads(line)


async def _stop_metad(process: asyncio.subprocess.Process) -> float:
    """SIGTERM, then SIGKILL if metad is not gone within a minute: a teardown never hangs the run.

    Returns the seconds metad took to exit (printed: a slow shutdown is a finding of its own).
    """
    start = time.perf_counter()
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            print("  pitrix-metad ignored SIGTERM for 60 s: killed", flush=True)
            process.kill()
            await process.wait()
    return time.perf_counter() - start


def _row(figure: str, n: str, ours: str, peer: str, target: str = "", ratio: str = "") -> str:
    return f"| {figure} | {n} | {ours} | {peer} | {ratio} | {target} |"


def _ratio(ours: tuple[float, float] | None, theirs: tuple[float, float] | None, label: str = "") -> str:
    """pitrix's median and p99 over the peer's ("(anchor)" when the peer's are ANCHORS.md's)."""
    if ours is None or theirs is None:
        return "-"
    return f"{ours[0] / theirs[0]:.2f}× / {ours[1] / theirs[1]:.2f}×{label}"


async def go_metad_fanout(
    tmp: Path, etcd_url: str, etcd_tls: EtcdTLS, counts: list[int], rounds: dict[int, int], idle: int = 0
) -> tuple[dict[int, tuple[float, float]], str, float]:
    """Go metad's fan-out in this run (bench/peer_metad.py) and its KiB per idle long-poll (with
    ``idle``), or {} and why it was not measured."""
    built = await asyncio.to_thread(peers.ensure, "metad")
    if built.path is None:
        return {}, built.why, 0.0
    try:
        runs, rss, per_idle = await peer_metad.fanout(
            built.path, tmp, etcd_url, etcd_tls, counts, rounds, idle
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        return {}, f"Go metad ({built.commit[:12]}) failed: {exc}", 0.0
    results = {n: _stats(v) for n, v in runs.items()}
    for n, (median, p99) in results.items():
        print(f"  Go metad fan-out N={n}: median {median:.1f} ms, p99 {p99:.1f} ms (plain HTTP)", flush=True)
    print(
        f"  Go metad {built.commit[:12]} (built from source, bench/peers.py), RSS {rss:.1f} MiB", flush=True
    )
    return results, "", per_idle


def _fmt(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f}"


async def main(args: argparse.Namespace) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    idle_count = args.idle or min(10000, max(100, soft - 500))
    counts = args.counts or ([1, 100] if args.quick else [1, 100, 1000])
    rounds = {1: 50, 100: 20, 1000: 10} if not args.quick else {1: 10, 100: 5, 1000: 5}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        etcd = EmbeddedEtcd(tmp / "etcd", unsafe_no_fsync=True)
        etcd_url = await etcd.start()
        etcd_tls = etcd.client_tls
        assert etcd_tls is not None
        store = await Store.connect([etcd_url], tls=etcd_tls)
        ca = pki.CertificateAuthority.create("bench CA")
        (tmp / "ca.pem").write_bytes(ca.cert_pem)
        ca.issue_server([LISTEN_IP]).write(tmp / "server.crt", tmp / "server.key")
        ca.issue_management().write(tmp / "runtime.crt", tmp / "runtime.key")
        process, ready = await _start_metad(tmp, etcd_url, etcd_tls, args.profile)
        manage = MetadManagementClient(
            ready["manage_url"],
            ca_file=tmp / "ca.pem",
            cert_file=tmp / "runtime.crt",
            key_file=tmp / "runtime.key",
        )
        world = World(tmp, ca, ready["instance_url"], manage, process.pid or 0, store)
        try:
            await manage.put_data("/clusters/c1", {
                "cluster": {"cluster_id": "c1", "owner": "usr-bench", "app_id": "app-bench"},
                "env": {"web": {"port": 80, "workers": 0}},
                "endpoints": {"http": {"port": 8000, "protocol": "tcp"}},
            })  # fmt: skip
            await _register(world, 0, max(*counts, GET_CLIENTS))
            print(f"metad pid {world.pid}, mTLS on; etcd {etcd_url}; ulimit -n {soft}", flush=True)
            fan = await fanout(world, counts, rounds)
            if args.profile:  # a profile is of the fan-out path alone
                return
            go_idle = 0 if args.fanout_only else idle_count if not args.quick else 500
            go_fan, go_why, go_per_idle = await go_metad_fanout(
                tmp, etcd_url, etcd_tls, counts, rounds, go_idle
            )
            if go_why:
                print(f"  Go metad not measured in this run: {go_why}", flush=True)
            if args.fanout_only:
                _fanout_rows(fan, go_fan)
                return
            raw = await etcd_watch(store, [1, 100] if args.quick else [1, 1000], rounds | {1000: 10})
            gets, gets_per_core = await gets_per_second(world, GET_CLIENTS, 2.0 if args.quick else 5.0)
            held = await idle(world, idle_count if not args.quick else 500)
        finally:
            await manage.close()
            stopped = await _stop_metad(process)
            print(f"  metad stopped {stopped:.1f} s after SIGTERM", flush=True)
            await store.close()
            await etcd.stop()

    _fanout_rows(fan, go_fan)
    for n, pair in raw.items():
        peer = ANCHOR_ETCD.get(n)
        shown = f"etcd {_fmt(peer)} (ANCHORS)" if peer else "-"
        ratio = _ratio(pair, peer, " (anchor)")
        print(_row("one put → last of N etcd watchers (aetcd)", f"{n:,}", _fmt(pair), shown, "", ratio))
    count, mib, per = held
    if go_per_idle:
        print(
            _row(
                "KiB of metad RSS per idle long-poll",
                f"{go_idle:,}",
                f"{per:.1f} (mTLS)",
                f"Go metad {go_per_idle:.1f} (same run, plain HTTP)",
                "",
                f"{per / go_per_idle:.2f}×",
            )
        )
    extrapolated = per * 10000 / 1024 + (mib - per * count / 1024)
    note = "" if count >= 10000 else f" (10,000 extrapolated: {extrapolated:.0f} MiB)"
    peer_n, peer_mib = ANCHOR_IDLE
    ours = f"{mib:.0f} MiB, {per:.1f} KiB each{note}"
    print(
        _row(
            "metad RSS holding N idle long-polls",
            f"{count:,}",
            ours,
            f"metad {peer_mib:.0f} MiB at {peer_n:,} (ANCHORS)",
            f"< {TARGET_IDLE_MIB:.0f} MiB at 10,000",
        )
    )
    print(
        _row(
            "idle long-polls held per GiB of metad memory",
            "-",
            f"{count * 1024 / mib:,.0f} (mTLS; RSS at {count:,})",
            f"metad {peer_n * 1024 / peer_mib:,.0f} (RSS at {peer_n:,}; ANCHORS)",
        )
    )
    print(
        _row(
            "GET /self per second (50 clients)", "50", f"{gets:,.0f}/s", f"metad {ANCHOR_GETS:,}/s (ANCHORS)"
        )
    )
    print(
        _row(
            "GET /self per metad CPU-second (one core)",
            "50",
            f"{gets_per_core:,.0f}/s",
            "-",
        )
    )


def _fanout_rows(fan: dict[int, tuple[float, float]], go_fan: dict[int, tuple[float, float]]) -> None:
    """The table's head and its fan-out rows: Go metad of this run, else ANCHORS.md's (labelled)."""
    print()
    print("| figure | N | pitrix-metad (mTLS) median / p99 ms | peer (same run, else ANCHORS.md) "
          "| pitrix ÷ peer (median / p99) | target |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n, pair in fan.items():
        peer: tuple[float, float] | None
        if n in go_fan:
            peer, label, shown = go_fan[n], "", f"Go metad {_fmt(go_fan[n])} (same run, plain HTTP)"
        else:
            peer, label = ANCHOR_FANOUT.get(n), " (anchor)"
            shown = f"metad {_fmt(peer)} (ANCHORS)"
        print(_row("one write → last of N /self long-polls", f"{n:,}", _fmt(pair), shown,
                   TARGET_FANOUT.get(n, ""), _ratio(pair, peer, label)))  # fmt: skip


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metad_fanout", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and N, for a smoke run")
    parser.add_argument(
        "--idle", type=int, default=0, help="idle long-polls to hold (default: 10,000 or ulimit)"
    )
    parser.add_argument(
        "--counts",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="fan-out sizes, comma-separated (default: 1,100,1000; --quick: 1,100)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run metad under cProfile (stats to FILE) for the fan-out figures only",
    )
    parser.add_argument("--fanout-only", action="store_true", help="measure the fan-out figures only")
    args = parser.parse_args()
    logs.configure("warning")
    aio.run(main(args))


if __name__ == "__main__":
    run()
