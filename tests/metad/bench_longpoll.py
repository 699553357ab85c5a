"""Benchmark: one write → the last of N long-polling instances answered.

Run: ``.venv/bin/python -m tests.metad.bench_longpoll --waiters 100 1000 --rounds 20``.
Each round every instance holds ``GET /self/env?wait=true&prev_version=V`` (V from its last
answer, as an agent does), one management write changes the shared role env, and the round's
figure is the time from issuing the write to the last answer received. Real etcd, real HTTP,
one client socket per instance bound to the instance's own loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from pitrix import aio, logs
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


def _ip(n: int) -> str:
    return f"127.{110 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


async def _round(
    held: Callable[[int], Awaitable[None]],
    manage: MetadManagementClient,
    sessions: list[aiohttp.ClientSession],
    url: str,
    versions: list[int],
    value: int,
) -> float:
    done: list[float] = []

    async def poll(i: int) -> None:
        params = {"wait": "true", "prev_version": str(versions[i])}
        async with sessions[i].get(url, params=params, headers={"Accept": "application/json"}) as response:
            raw = await response.read()
            done.append(time.perf_counter())
            # The client checks cheaply (a substring, not a parse): the figure is metad's, not json's.
            assert response.status == 200 and f'"workers":"{value}"'.encode() in raw, raw[:200]
            versions[i] = int(response.headers["X-Metad-Version"])

    tasks = [asyncio.create_task(poll(i)) for i in range(len(sessions))]
    await asyncio.wait_for(held(len(sessions)), 120)
    start = time.perf_counter()
    await manage.put_data("/clusters/c1/env/web/workers", value)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return (max(done) - start) * 1000


async def _register(manage: MetadManagementClient, first: int, last: int) -> None:
    sem = asyncio.Semaphore(64)

    async def register(n: int) -> None:
        async with sem:
            iid = f"i-{n}"
            await manage.put_data(f"/clusters/c1/hosts/web/{iid}", {"instance_id": iid, "ip": _ip(n)})
            await manage.put_mapping(iid, {"cluster_id": "c1", "role": "web", "ip": _ip(n)})

    await asyncio.gather(*(register(n) for n in range(first, last)))


async def bench(counts: list[int], rounds: int, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EmbeddedEtcd(Path(tmp), unsafe_no_fsync=True)
        url = await etcd.start()
        store = await Store.connect([url], prefix="/bench", tls=etcd.client_tls)
        metad = Metad(store, "127.109.0.1", 0, 0)
        await metad.start()
        manage = MetadManagementClient(metad.manage_url)
        try:
            await _register(manage, 0, max(counts))
            for count in counts:
                sessions = [
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(_ip(n), 0)))
                    for n in range(count)
                ]
                try:
                    versions = [metad.mirror.revision] * count
                    figures = [
                        await _round(
                            metad.mirror.waiters.wait_for_count,
                            manage,
                            sessions,
                            metad.instance_url + path,
                            versions,
                            r,
                        )
                        for r in range(rounds)
                    ]
                finally:
                    for session in sessions:
                        await session.close()
                _report(f"N={count} (in-process metad)", figures)
        finally:
            await manage.close()
            await metad.stop()
            await store.close()
            await etcd.stop()


async def bench_process(counts: list[int], rounds: int, path: str) -> None:
    """The same measurement against ``pitrix-metad --embedded-etcd`` running as its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pitrix.metad.main", "--listen-ip", "127.109.0.1",
            "--instance-port", "0", "--manage-port", "0", "--embedded-etcd", "--state-dir", tmp,
            "--etcd-client-port", "0", "--etcd-peer-port", "0", "--log-level", "warning",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        manage = MetadManagementClient(ready["manage_url"])
        try:
            await _register(manage, 0, max(counts))
            for count in counts:
                sessions = [
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(_ip(n), 0)))
                    for n in range(count)
                ]
                url = ready["instance_url"] + path
                versions = [int((await manage.healthz())["revision"])] * count

                async def held(n: int, manage: MetadManagementClient = manage) -> None:
                    # A benchmark tool: the server's own gauge is the only view into another process.
                    while (await manage.healthz())["waiters"] < n:  # noqa: ASYNC110
                        await asyncio.sleep(0.005)

                try:
                    figures = [
                        await _round(held, manage, sessions, url, versions, value) for value in range(rounds)
                    ]
                finally:
                    for session in sessions:
                        await session.close()
                _report(f"N={count} (metad process)", figures)
        finally:
            await manage.close()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)


def _report(label: str, figures: list[float]) -> None:
    figures = sorted(figures)
    p99 = figures[min(len(figures) - 1, round(0.99 * (len(figures) - 1)))]
    print(
        f"{label}: write → last answer median {statistics.median(figures):.1f} ms, "
        f"p99 {p99:.1f} ms, min {figures[0]:.1f} ms over {len(figures)} rounds",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiters", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--process", action="store_true", help="run metad as its own process")
    parser.add_argument(
        "--path", default="/self/env", help="what every instance long-polls (/self/env or /self)"
    )
    args = parser.parse_args()
    logs.configure("warning")
    aio.run((bench_process if args.process else bench)(args.waiters, args.rounds, args.path))


if __name__ == "__main__":
    main()
