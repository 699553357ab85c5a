"""Benchmark: metad's memory per idle long-poll, beside the floor OpenSSL and uvloop set.

One etcd, one ``pitrix-metad`` with mutual TLS (as bench.metad_fanout starts it) and one bare uvloop
server with the same TLS settings (bench/tls_floor.py: it reads the request and holds the
connection, nothing else). N instances, each with its own certificate, open a connection to each
and send ``GET /self?wait=true`` (metad holds it as a long-poll); the figure is each server's RSS
growth over N. metad's is printed as a ratio to the floor's, measured minutes apart in the same run
(goal: ≤ 40 KiB each, the floor ~37 KiB with OpenSSL 3.0), and the servers' RSS at rest as a ratio
to a bare ``python -c pass``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.metad_fanout import (
    LISTEN_IP,
    World,
    _register,
    _rss_kib,
    _start_metad,
    _stop_metad,
)
from bench.startup import BARE, child_env, cost
from bench.table import Table
from pitrix import aio, logs, pki
from pitrix.metad.client import MetadManagementClient
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

TITLE = "pitrix-metad: memory per idle mTLS long-poll, beside a bare uvloop + mTLS server"
GOAL_KIB = 40.0


async def hold(world: World, port: int, count: int, request: bytes) -> list[asyncio.StreamWriter]:
    """``count`` connections to ``LISTEN_IP:port``, each instance's own, each with ``request`` sent."""
    sem = asyncio.Semaphore(64)
    writers: list[asyncio.StreamWriter] = []

    async def one(n: int) -> None:
        async with sem:
            _, writer = await asyncio.open_connection(LISTEN_IP, port, ssl=world.context(n))
            writer.write(request)
            await writer.drain()
            writers.append(writer)

    await asyncio.gather(*(one(n) for n in range(count)))
    return writers


async def metad_per_connection(world: World, count: int) -> tuple[int, int]:
    """metad's RSS before and while it holds ``count`` idle long-polls (KiB)."""
    base = (await world.healthz())["waiters"]
    # etcd's revision: the mappings just registered may not be in metad's mirror yet, and an older
    # prev_version would be answered at once instead of held.
    _, revision = await world.store.get_prefix("/_pitrix/mapping/i-0/")
    port = int(world.instance_url.rsplit(":", 1)[1])
    request = (
        f"GET /self?wait=true&prev_version={revision} HTTP/1.1\r\nHost: {LISTEN_IP}:{port}\r\n"
        "Accept: application/json\r\n\r\n"
    )
    before = _rss_kib(world.pid)
    writers = await hold(world, port, count, request.encode())
    await world.wait_waiters(base + count)
    during = _rss_kib(world.pid)
    for writer in writers:
        writer.close()
    await world.wait_until_held(base)
    return before, during


async def settled(pid: int, timeout: float = 30.0) -> int:
    """``pid``'s RSS once it stops moving (the server has read what was sent to it), in KiB: waited
    for with a deadline, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    now, last = _rss_kib(pid), -1
    while now != last and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        last, now = now, _rss_kib(pid)
    return now


async def floor_per_connection(world: World, tmp: Path, count: int) -> tuple[int, int]:
    """The bare server's RSS before and while it holds ``count`` connections (KiB)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.tls_floor", "--listen-ip", LISTEN_IP,
        "--cert", str(tmp / "server.crt"), "--key", str(tmp / "server.key"),
        "--client-ca", str(tmp / "ca.pem"),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    assert process.stdout is not None
    try:
        ready: dict[str, Any] = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        request = (
            f"GET /self?wait=true HTTP/1.1\r\nHost: {LISTEN_IP}:{ready['port']}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode()
        # The warm-up metad had: 100 connections held and closed before the measured round.
        for writer in await hold(world, ready["port"], min(count, 100), request):
            writer.close()
        before = await settled(process.pid)
        writers = await hold(world, ready["port"], count, request)
        during = await settled(process.pid)
        for writer in writers:
            writer.close()
        return before, during
    finally:
        process.terminate()
        await process.wait()


async def measure(count: int) -> tuple[Table, dict[str, float]]:
    bare = await asyncio.to_thread(cost, BARE, 5, child_env())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        etcd = EmbeddedEtcd(tmp / "etcd", unsafe_no_fsync=True)
        etcd_url = await etcd.start()
        assert etcd.client_tls is not None
        store = await Store.connect([etcd_url], tls=etcd.client_tls)
        ca = pki.CertificateAuthority.create("bench CA")
        (tmp / "ca.pem").write_bytes(ca.cert_pem)
        ca.issue_server([LISTEN_IP]).write(tmp / "server.crt", tmp / "server.key")
        ca.issue_management().write(tmp / "runtime.crt", tmp / "runtime.key")
        process, ready = await _start_metad(tmp, etcd_url, etcd.client_tls)
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
            })  # fmt: skip
            await _register(world, 0, count)
            # A first round warms metad's caches and pools (the per-instance views, the TLS
            # session objects) so that the measured round is what each further connection costs.
            await metad_per_connection(world, min(count, 100))
            metad = await metad_per_connection(world, count)
            floor = await floor_per_connection(world, tmp, count)
        finally:
            await manage.close()
            await _stop_metad(process)
            await store.close()
            await etcd.stop()
    per_metad = (metad[1] - metad[0]) / count
    per_floor = (floor[1] - floor[0]) / count
    table = Table(
        f"{count:,} idle long-polls, one connection and certificate per instance",
        ["server", "RSS at rest MiB", "vs bare python", "KiB per idle connection", "vs the floor"],
    )
    mib = bare.rss_kib / 1024
    table.add("`python -c pass` (bare)", f"{mib:.1f}", "1.00×", "-", "-")
    table.add(
        "bare uvloop + mTLS (bench/tls_floor.py)",
        f"{floor[0] / 1024:.1f}",
        f"{floor[0] / bare.rss_kib:.2f}×",
        f"{per_floor:.1f}",
        "1.00×",
    )
    table.add(
        "pitrix-metad (mTLS)",
        f"{metad[0] / 1024:.1f}",
        f"{metad[0] / bare.rss_kib:.2f}×",
        f"{per_metad:.1f}" + ("" if per_metad <= GOAL_KIB else " (**over the goal**)"),
        f"{per_metad / per_floor:.2f}×",
    )
    table.notes.append(
        f"goal: ≤ {GOAL_KIB:.0f} KiB per idle connection; each server's RSS at rest is after a warm-up "
        "round of 100 connections held and closed"
    )
    return table, {"metad": per_metad, "floor": per_floor}


async def run(quick: bool) -> list[Table]:
    table, _ = await measure(1000 if quick else 4000)
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metad_idle", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="idle connections to hold")
    args = parser.parse_args()
    logs.configure("warning")
    table, _ = aio.run(measure(args.count))
    print(table.text())


if __name__ == "__main__":
    main()
