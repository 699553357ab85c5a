"""Replicas: N clusters created at once through three pitrixd replicas sharing one etcd.

A private etcd (the embedded one, started apart and used as an external etcd by every replica),
the simulator in light mode with its light VMs in worker processes, and three pitrixd processes;
the app is the orchestration benchmark's trivial one-role app, so what is measured is pitrix's own
work. The creates go round-robin to the three replicas; each replica's CPU seconds and resident
memory come from /proc; the etcd bytes from the keys pitrixd wrote (by kind of record), from
etcd's history of the run (every put, read back after the run) and from etcd's own database
size. ``PITRIX_BENCH_REPLICAS_N`` sets N (default 300; 30 with ``--quick``),
``PITRIX_BENCH_REPLICAS_NODES`` the nodes per cluster (default 3).

Capacity on paper. A live cluster keeps its record, its nodes, its tokens, its owner key, its jobs
with their journals and its event history in etcd; the second table gives the bytes of each per
cluster after its create, and how many puts the create took. The event history is the largest part
of the live bytes; only the replica that owns a cluster records its events, each once (every
replica recording every event, as before, put each one once per replica: with three replicas four
fifths of a create's puts; at 30 three-node clusters, load 3-12, one run each: 198 event puts per
cluster before, 33 after, 239 puts and 54 KB put per cluster in all before, 74 and 24 KB after),
and each put is kept in etcd's history until compaction. etcd's database keeps the history of every
key until compaction and frees space only on defrag, so it grows several times faster than the live
bytes: run etcd with --auto-compaction-retention and defrag now and then. At etcd's 8 GiB quota the
live bytes allow hundreds of thousands of clusters (the event history, 1,000 events kept per
cluster, is what grows: a busy cluster's history fills to its limit); what bounds one etcd first is
the watch fan-out: every replica watches every cluster record and owner key (the fleet's view, its
owner watch, the API's event hub), so each write of a cluster's record is sent once per replica per
watch, and a replica's memory holds the fleet view (a few hundred bytes per cluster). Within one
region or one runtime's control plane, one etcd cluster of three or five members holds 10,000
clusters with room to spare; beyond some 100,000 clusters, or across regions (where a write's round
trip to the etcd leader is the latency of every step), run one pitrix installation, with its own
etcd, per region or per large runtime.

What stopped the runs at 100 clusters (the last stop's and this one's first, at a load average of
25-38 from other work): the owner's one metadata VM's pitrix-metad collapsed. It answered 503
"etcd did not answer within 5s" to heartbeats, status writes and the runtime's reads, while its
etcd answered the same reads from outside in 0.15-0.3 s, logged no slow disk sync and had applied
only a few hundred revisions; metad ran at its share of the CPU (7-10% of a core here, four times
as many involuntary as voluntary context switches) with its requests queued past the store's 5 s
deadline. What queued them: every replica's app-metrics feed follows every live cluster with a
metad watch of its own (a health check, a read and a stream each, over a new TLS connection), so a
burst of creates through three replicas opened three watches per cluster on the one metad just as
the agents bootstrapped there, each asked again after the 503s that followed. One pitrixd brought
100 three-node clusters through the same kind of metadata VM in the same hour. Two product changes
came of it: the feed starts when a cluster's create ends (a silent node was no news while
creating already), and the runtime's management client asks again with backoff for up to 60 s
while metad answers 503 rather than failing the step at the first (register, bootstrap-agents,
start, mark-replaced failed that way, half of the failures). With both, 98 of 100 one-node
clusters were active in 145 s at a load of 28-30 where 13 of 100 had been; the two left were the
benchmark's own waits answered 503 by pitrixd's etcd, as loaded as everything else here. Beyond
that, on this two-core host every process shares the cores with the rest (three replicas, the
simulator, every light VM, other work); on a cloud the metadata VM has its own, and a metadata
cluster of three members spreads the agents over three metads.

At 300 one-node clusters (load average 13-30) it came back through the heartbeats: 131 of 300
active in 460 s, metad at 60 CPU s (13% of a core) answering 1,614 heartbeats 503 in two minutes,
the rest of the failures the runtime's reads of a metad busy for longer than the client's 60 s;
10,000 was not attempted. At the end of that run one replica owned all 301 clusters: the
other two had lost their replica leases under this load and not claimed their shares back within
the run. Why: after a regain a replica reconsidered every cluster (a read each) inside the task
that watches its lease, so a lease lost again meanwhile went unnoticed for as long as that took
(22 s for 150 clusters in a reproduction with replicas starved by SIGSTOP/SIGCONT), and the
replica was out of the fleet, its share counted nowhere, all that time; that reading now runs
apart and the lease is replaced at once. A returning replica still gets clusters back only as
they go idle: the adopted jobs that were mid-plan stay where they are until they end.

The heartbeat path was then cut (docs/internals.md "First beats are bounded"): at most 32 first
beats (a grant and a put each) under way in metad, one past that answered 503 with Retry-After
at once, the agent asking again no sooner and jittered, every other failed beat retried jittered
within its interval, beats' puts sharing the status reports' group commit, and the runtime's
wait-agents waiting on while metad refuses first beats; an agent's first round reads /self once
instead of three subtrees at once (each one more connection, a TLS handshake on metad: 27% of
metad's samples under py-spy in the orchestration bench at 40 three-node clusters). That alone
did not bring 300 through: what failed them was not metad's CPU (11-17% of a core) but its one
gRPC channel to its embedded etcd going silent (no byte either way for over a minute, every call
past its 5 s deadline, etcd's revision frozen, while the same etcd answered a fresh client in
20 ms). Past about 200 streams on one gRPC channel every further call on it waits unsent, and the
runtime's status watch of every cluster it works on was an etcd watch on that channel. With the
management API's watches on channels of their own (at most 100 each), all 300 one-node clusters
were active in 41 s, metad at 9.9 CPU s (0.033 per cluster, 24% of a core), 53 first beats
refused busy and asked back (twice, load average 2-8); before, in the same hour, 15 of 300 in
453 s with metad at 49.8 CPU s (load average 11-37) and 36 of 300 in 452 s with metad at 37.5 CPU s
(load average 1.5, a quiet host), and with the heartbeat changes only 25-125 of 300
(docs/benchmarks.md "Replicas" has every run).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import procs
from bench.orchestration import LIGHT_WORKERS, trivial_app
from bench.stack import Stack, cpu_of, metad_health, metad_pids, wait_state
from bench.table import Table
from pitrix.api.event_log import CURSOR
from pitrix.cli.client import ApiClient, ApiError
from pitrix.cli.demo import sim_runtime
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.watch import watch_prefix

TITLE = "Replicas: clusters shared by three pitrixd on one etcd"
REPLICAS = ("r0", "r1", "r2")
TOKEN = "bench-replicas-token-0123456789"
QUOTA = 8 * 1024**3  # etcd's largest recommended --quota-backend-bytes


async def db_size(etcd: EmbeddedEtcd) -> int:
    tls = etcd.client_tls
    connector = aiohttp.TCPConnector(ssl=tls.ssl_context() if tls is not None else False)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(etcd.client_url + "/v3/maintenance/status", json={}) as response,
    ):
        return int((await response.json())["dbSize"])


def kind(key: str) -> str:
    parts = key.strip("/").split("/")
    if parts[0] == "clusters":
        return "cluster"
    if parts[0] == "cluster-data" and len(parts) > 2:
        return {"nodes": "nodes", "jobs": "jobs", "steps": "journal", "tokens": "tokens"}.get(
            parts[2], "other"
        )
    if parts[0] == "owners":
        return "owner"
    if parts[0] == "event-log" or key == CURSOR or key.startswith(f"{CURSOR}/"):
        return "events"
    return "other"


async def bytes_by_kind(store: Store) -> dict[str, int]:
    kvs, _ = await store.get_prefix("/")
    sizes: dict[str, int] = collections.Counter()
    for kv in kvs:
        sizes[kind(kv.key)] += len(kv.key) + len(kv.value)
    return dict(sizes)


async def writes_by_kind(store: Store, first: int, last: int) -> tuple[dict[str, int], dict[str, int]]:
    """Every put from revision ``first`` to ``last`` (etcd's history, read back after the run, so
    the count costs the run nothing): how many and how many bytes, by record. Rewrites count:
    a record's cost in etcd's history is in how often it is put, not in its last value."""
    puts: dict[str, int] = collections.Counter()
    sizes: dict[str, int] = collections.Counter()
    if last < first:
        return {}, {}
    async for batch in watch_prefix(store, "/", first):
        for event in batch.events if not batch.resync else []:
            if event.type == "put":
                puts[kind(event.key)] += 1
                sizes[kind(event.key)] += len(event.key) + len(event.value)
        if batch.revision >= last:
            break
    return dict(puts), dict(sizes)


async def start_replica(workdir: Path, etcd: EmbeddedEtcd, name: str) -> procs.Child:
    tls = etcd.client_tls
    assert tls is not None
    argv = [procs.bin_path("pitrixd"), "--state-dir", str(workdir / name), "--api-listen", "127.0.0.1:0"]
    argv += ["--replica-id", name, "--etcd", etcd.client_url, "--log-level", "warning"]
    env = {
        "PITRIX_API__TOKENS": json.dumps([{"token": TOKEN, "owner": "bench", "admin": True}]),
        "PITRIX_ETCD__CA_FILE": str(tls.ca_file),
        "PITRIX_ETCD__CERT_FILE": str(tls.cert_file),
        "PITRIX_ETCD__KEY_FILE": str(tls.key_file),
        "PITRIX_SECRETS__KEY_FILE": str(workdir / "secret.key"),
    }
    return await procs.start(name, argv, workdir / f"{name}.log", env)


async def create(api: ApiClient, name: str, patience: float, nodes: int = 1) -> str:
    """One cluster of ``nodes`` nodes to its end: "" when active, else why not."""
    app = trivial_app(patience)
    app["roles"][0]["count"] = nodes
    created = await api.post("/v1/clusters", {"runtime": "sim", "app": app, "name": name, "channel": "ssh"})
    try:
        view = await wait_state(api, created["cluster"]["id"], created["job"]["id"], timeout=patience)
    except (RuntimeError, ApiError) as exc:
        return str(exc)
    return "" if view["state"] == "active" else f"{view['state']}: {view.get('last_error')}"


async def measure(n: int, nodes: int = 1) -> tuple[Table, Table]:
    workdir = Path(tempfile.mkdtemp(prefix="pitrix-bench-replicas-"))
    # The directory (and the processes' logs in it) is removed only after a run that worked.
    etcd = EmbeddedEtcd(workdir / "etcd")
    await etcd.start()
    stack = Stack(workdir, f"127.{procs.private_net()}.0.0/16", redraw_network=True)
    children: dict[str, procs.Child] = {}
    apis: list[ApiClient] = []
    worked = False
    store = await Store.connect([etcd.client_url], prefix="/pitrix", tls=etcd.client_tls)
    try:
        await stack.start_sim("--light", "--light-workers", str(LIGHT_WORKERS))
        children["r0"] = await start_replica(workdir, etcd, "r0")  # makes the secrets key
        for name in REPLICAS[1:]:
            children[name] = await start_replica(workdir, etcd, name)
        apis = [ApiClient(str(children[r].ready["url"]), TOKEN) for r in REPLICAS]
        assert stack.sim is not None
        await apis[0].post("/v1/runtimes", {**sim_runtime(stack.sim.ready), "metadata_size": 1})
        first = await create(apis[0], "first", 300)  # the owner's metadata cluster, made apart
        if first:
            raise RuntimeError(f"the first cluster did not become active: {first}")
        bytes0, db0, rev0 = await bytes_by_kind(store), await db_size(etcd), await store.revision()
        metads = metad_pids(workdir)
        metad_cpu0 = cpu_of(metads)
        pids = {r: children[r].pid for r in REPLICAS}
        cpu0 = {r: procs.cpu_seconds(p) for r, p in pids.items()}
        rss0 = {r: procs.memory_kib(p) for r, p in pids.items()}
        patience = max(300.0, 1.5 * n)
        began = time.monotonic()
        errors = await asyncio.gather(
            *(create(apis[i % len(apis)], f"c{i}", patience, nodes) for i in range(n))
        )
        wall = time.monotonic() - began
        metad_cpu = cpu_of(metads) - metad_cpu0
        beats = [(await metad_health(pid)).get("first_beats") for pid in metads]
        refused = sum(b["refused"] for b in beats if isinstance(b, dict))
        told = any(isinstance(b, dict) for b in beats)
        shown = {r["id"]: r for r in (await apis[0].get("/v1/replicas"))["replicas"]}
        bytes1, db1, rev1 = await bytes_by_kind(store), await db_size(etcd), await store.revision()
        puts, put_bytes = await writes_by_kind(store, rev0 + 1, rev1)
        failed = [e for e in errors if e]
        per = Table(
            f"{n:,} {nodes}-node clusters created at once through 3 replicas (light mode)",
            ["replica", "clusters owned", "CPU s / cluster", "RSS MiB", "MiB / cluster"],
        )
        for r in REPLICAS:
            rss = procs.memory_kib(pids[r])
            owned = int(shown.get(r, {}).get("clusters_owned", 0))
            per.add(
                r,
                owned,
                f"{(procs.cpu_seconds(pids[r]) - cpu0[r]) / max(owned, 1):.3f}",
                f"{rss / 1024:.0f}",
                f"{max(0, rss - rss0[r]) / 1024 / max(owned, 1):.3f}",
            )
        per.notes.append(
            f"all {n - len(failed)} active in {wall:.1f} s (wall); {len(failed)} did not make it"
        )
        if failed:
            per.notes.append(f"the first failure: {failed[0][:300]}")
        per.notes.append(
            f"the owner's metadata VM's pitrix-metad: {metad_cpu:.1f} CPU s over the run "
            f"({metad_cpu / n:.3f} per cluster), {metad_cpu / max(wall, 1e-9):.0%} of one core on "
            f"average; first heartbeats it refused as busy (503 + Retry-After): "
            f"{refused if told else 'not counted by this metad'}; load average "
            f"{os.getloadavg()[0]:.1f} at the end"
        )
        per.notes.append(
            "CPU and MiB per cluster: the replica's own over the clusters it owns at the end "
            "(the creates it accepted for others cost it a little too)"
        )
        store_table = Table(
            "etcd bytes per cluster (keys + values pitrixd wrote, by record)",
            ["record", "live bytes / cluster", "puts / cluster", "bytes put / cluster"],
        )
        for name in ("cluster", "nodes", "jobs", "journal", "tokens", "owner", "events", "other"):
            grown = bytes1.get(name, 0) - bytes0.get(name, 0)
            written = f"{puts.get(name, 0) / n:,.1f}"
            store_table.add(name, f"{grown / n:,.0f}", written, f"{put_bytes.get(name, 0) / n:,.0f}")
        logical = sum(bytes1.values()) - sum(bytes0.values())
        store_table.add(
            "**all**",
            f"{logical / n:,.0f}",
            f"{sum(puts.values()) / n:,.1f}",
            f"{sum(put_bytes.values()) / n:,.0f}",
        )
        db_per = (db1 - db0) / n
        store_table.add("etcd database growth (dbSize, history included)", f"{db_per:,.0f}", "-", "-")
        live_events = bytes1.get("events", 0) - bytes0.get("events", 0)
        if puts.get("events"):
            store_table.notes.append(
                f"event history: {puts['events'] / n:,.1f} puts per cluster for "
                f"{put_bytes['events'] / max(live_events, 1):.1f}× its live bytes: only the owning "
                "replica records a cluster's events (each once, and its cursor every few seconds), "
                "and each put is etcd history until compaction"
            )
        if not puts:
            store_table.notes.append("puts: etcd's history of the run was compacted before it was read")
        store_table.notes.append(
            f"capacity on paper at the 8 GiB quota: {QUOTA / max(logical / n, 1):,.0f} clusters by live "
            f"bytes, {QUOTA / max(db_per, 1):,.0f} by database growth before compaction and defrag"
        )
        worked = True
        return per, store_table
    finally:
        for api in apis:
            await api.close()
        await store.close()
        for child in children.values():
            await child.stop()
        await stack.stop()
        await etcd.stop()
        if worked:
            shutil.rmtree(workdir, ignore_errors=True)


async def run(quick: bool) -> list[Table]:
    n = 30 if quick else int(os.environ.get("PITRIX_BENCH_REPLICAS_N", "300"))
    nodes = int(os.environ.get("PITRIX_BENCH_REPLICAS_NODES", "3"))
    per, store = await measure(n, nodes)
    return [per, store]


if __name__ == "__main__":
    import sys

    from pitrix import aio

    for table in aio.run(run("--quick" in sys.argv)):
        print(table.text())
