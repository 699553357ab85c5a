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
import statistics
import tempfile
import time
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
    metad: Metad,
    manage: MetadManagementClient,
    sessions: list[aiohttp.ClientSession],
    url: str,
    versions: list[int],
    value: int,
) -> float:
    done: list[float] = []

    async def poll(i: int) -> None:
        params = {"wait": "true", "prev_version": str(versions[i])}
        async with sessions[i].get(url, params=params) as response:
            body = await response.json()
            done.append(time.perf_counter())
            assert response.status == 200 and body["workers"] == str(value), body
            versions[i] = int(response.headers["X-Metad-Version"])

    tasks = [asyncio.create_task(poll(i)) for i in range(len(sessions))]
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(len(sessions)), 120)
    start = time.perf_counter()
    await manage.put_data("/clusters/c1/env/web/workers", value)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return (max(done) - start) * 1000


async def bench(counts: list[int], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        etcd = EmbeddedEtcd(Path(tmp), unsafe_no_fsync=True)
        url = await etcd.start()
        store = await Store.connect([url], prefix="/bench")
        metad = Metad(store, "127.109.0.1", 0, 0)
        await metad.start()
        manage = MetadManagementClient(metad.manage_url)
        try:
            registered = 0
            for count in counts:
                sem = asyncio.Semaphore(64)

                async def register(n: int, sem: asyncio.Semaphore = sem) -> None:
                    async with sem:
                        iid = f"i-{n}"
                        await manage.put_data(
                            f"/clusters/c1/hosts/web/{iid}", {"instance_id": iid, "ip": _ip(n)}
                        )
                        await manage.put_mapping(iid, {"cluster_id": "c1", "role": "web", "ip": _ip(n)})

                await asyncio.gather(*(register(n) for n in range(registered, count)))
                registered = max(registered, count)
                sessions = [
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(_ip(n), 0)))
                    for n in range(count)
                ]
                try:
                    versions = [metad.mirror.revision] * count
                    figures = [
                        await _round(metad, manage, sessions, metad.instance_url + "/self/env", versions, r)
                        for r in range(rounds)
                    ]
                finally:
                    for session in sessions:
                        await session.close()
                figures.sort()
                p99 = figures[min(len(figures) - 1, round(0.99 * (len(figures) - 1)))]
                print(
                    f"N={count}: write → last answer median {statistics.median(figures):.1f} ms, "
                    f"p99 {p99:.1f} ms, min {figures[0]:.1f} ms over {rounds} rounds",
                    flush=True,
                )
        finally:
            await manage.close()
            await metad.stop()
            await store.close()
            await etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiters", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logs.configure("warning")
    aio.run(bench(args.waiters, args.rounds))


if __name__ == "__main__":
    main()
