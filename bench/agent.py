"""pitrix-agent: its footprint (one-shot CPU and memory as ratios to a bare Python of the same run,
and in a production install), render throughput, one agent's change-to-reload latency and memory,
bursts, and many in-process agents (the simulator's light mode), beside confd's figures.

Run ``python -m bench.agent [--quick]`` (or ``python -m bench agent``). Render throughput is the
engine alone on a 50-host template (what every round of a resource costs: build the key space,
bind confd's functions, execute; the parse is cached as in the agent). Latency and memory of one
agent come from the propagation benchmark's rig at N=1 (a ``pitrix-agent`` process on a
``pitrix-metad`` process on etcd; the write is a management PUT, the end its reload_cmd's line
reaching the benchmark). The burst and light-mode figures run agents inside this process on a metad
of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import importlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench import agent_footprint, procs, propagation
from bench.table import Table, ms, p50_p99
from pitrix import aio, logs
from pitrix.agent.agent import Agent, build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.render import TemplateCache
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

TITLE = "pitrix-agent: render throughput, change → reload, memory, bursts"
CONFD_MIB = 27
CONFD_WATCH_MIB = 27.4  # confd -watch resident memory, ANCHORS' second host
CONFD_N1 = propagation.CONFD[1]
HOSTS = 50
BURST = 100

# An lb/ZooKeeper-style template over every host of a role: what AppCenter images render most.
TEMPLATE_50 = """# {{getv "/cluster/cluster_id"}}
upstream web {
{{- range $dir := lsdir "/hosts/web"}}
{{- $ip := getv (printf "/hosts/web/%s/ip" $dir)}}
{{- $sid := atoi (getv (printf "/hosts/web/%s/sid" $dir))}}
    server {{$ip}}:{{getv (printf "/hosts/web/%s/port" $dir) "80"}} weight={{add $sid 1}};
{{- end}}
}
{{range gets "/hosts/web/*/ip"}}allow {{.Value}}; # {{base (dir .Key)}}
{{end -}}
servers={{join (getvs "/hosts/web/*/ip") ","}}
{{if eq (getv "/env/mode" "rr") "hash"}}hash $remote_addr;{{else}}least_conn;{{end}}
"""


def values_50() -> dict[str, str]:
    values = {"/cluster/cluster_id": "cl-bench", "/env/mode": "rr"}
    for n in range(HOSTS):
        base = f"/hosts/web/i-{n:04d}"
        values.update(
            {
                f"{base}/ip": f"10.0.{n // 250}.{n % 250 + 2}",
                f"{base}/port": str(8000 + n),
                f"{base}/sid": str(n + 1),
                f"{base}/instance_id": f"i-{n:04d}",
                f"{base}/role": "web",
            }
        )
    return values


def render_throughput(seconds: float) -> tuple[float, float, float, int]:
    """(templates/s with the parse cached, cold parse + render in s, per-render p99 in s, size)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "upstream.tmpl"
        src.write_text(TEMPLATE_50)
        propagation.settled(Path(tmp))  # else re-parsed every render (a file written seconds ago)
        values = values_50()
        # The engine's first import (modules compiled from source where no .pyc is written: 90 ms
        # on this host) is the process's start, not a render's: it happens before the clock runs.
        importlib.import_module("pitrix.agent.confdfuncs")
        started = time.perf_counter()
        out = TemplateCache().render(src, values)
        cold = time.perf_counter() - started
        cache = TemplateCache()
        cache.render(src, values)
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            cache.render(src, values)
            samples.append(time.perf_counter() - t0)
    rate = len(samples) / sum(samples)
    samples.sort()
    return rate, cold, samples[int(len(samples) * 0.99)], len(out)


def _ip(octet: int, n: int) -> str:
    return procs.host_ip(octet, n)


@asynccontextmanager
async def private_metad(base: Path) -> AsyncIterator[tuple[Metad, MetadManagementClient, int]]:
    """An etcd and an in-process metad on a private 127.X network; (metad, manage client, X)."""
    octet = procs.private_net()
    etcd = EmbeddedEtcd(base / "etcd", unsafe_no_fsync=True)
    store = await Store.connect([await etcd.start()], prefix="/bench", tls=etcd.client_tls)
    metad = Metad(store, f"127.{octet}.255.1", 0, 0, wait_timeout=60.0)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url)
    try:
        yield metad, manage, octet
    finally:
        await manage.close()
        await metad.stop()
        await store.close()
        await etcd.stop()


def light_agent(root: Path, url: str, ip: str) -> Agent:
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/confd/templates/v.tmpl").write_text(propagation.TEMPLATE)
    (root / "etc/confd/conf.d/v.toml").write_text(
        '[template]\nsrc = "v.tmpl"\ndest = "/etc/v.conf"\nkeys = ["/env", "/host"]\n'
    )
    propagation.settled(root / "etc/confd")
    config = load_config(
        root, None, Overrides(backend="metad", nodes=[url], watch=True), environ={"PITRIX_VM_IP": ip}
    )
    config.heartbeat_interval = 3600.0
    config.run_commands = False
    return build_agent(config, announce=lambda _i: None)


async def add_hosts(manage: MetadManagementClient, octet: int, count: int) -> None:
    await manage.post_data("/clusters/cb", {"cluster": {"cluster_id": "cb"}, "env": {"w": {"v": "0"}}})
    for n in range(count):
        await manage.put_data(f"/clusters/cb/hosts/w/i-{n}", {"ip": _ip(octet, n), "role": "w"})
        await manage.put_mapping(f"i-{n}", {"cluster_id": "cb", "role": "w", "ip": _ip(octet, n)})


@asynccontextmanager
async def agent_process(
    base: Path, agent_bin: str | None = None
) -> AsyncIterator[tuple[MetadManagementClient, procs.Child, propagation.StampedFifo]]:
    """One ``pitrix-agent`` process (propagation's resource: its reload_cmd reports on a FIFO) on
    an in-process metad. The benchmark's own process holds gRPC threads (etcd), so every fork that
    matters (reload_cmd) happens in the agent, as on a VM."""
    async with private_metad(base) as (metad, manage, octet):
        await add_hosts(manage, octet, 1)
        fifo = propagation.StampedFifo(base / "reloads.fifo")
        root = base / "vm0"
        for sub in ("etc/confd/conf.d", "etc/confd/templates", "etc/pitrix", "var/log"):
            (root / sub).mkdir(parents=True)
        (root / "etc/confd/templates/v.tmpl").write_text(propagation.TEMPLATE)
        (root / "etc/confd/conf.d/v.toml").write_text(propagation.RESOURCE.format(n=0, fifo=fifo.path))
        (root / "etc/pitrix/agent.toml").write_text(propagation.AGENT_TOML.format(url=metad.instance_url))
        propagation.settled(root / "etc/confd")
        env = {"PITRIX_VM_ROOT": str(root), "PITRIX_VM_IP": _ip(octet, 0), "PITRIX_VM_ID": "i-0"}
        if agent_bin is not None:  # another install's agent: none of this tree's code on its path
            env["PYTHONPATH"] = ""
        argv = [agent_bin or procs.bin_path("pitrix-agent")]
        child = await procs.start("agent", argv, root / "agent.log", env)
        try:
            await asyncio.wait_for(fifo.stamped.get(), 60)  # the first round's reload
            yield manage, child, fifo
        finally:
            await child.stop()
            fifo.close()


async def reloaded(fifo: propagation.StampedFifo) -> tuple[float, str]:
    """The next reload: (when its line arrived, the value it saw)."""
    stamp, line = await asyncio.wait_for(fifo.stamped.get(), 60)
    _n, value, _me = line.split(" ", 2)
    return stamp, value


async def one_agent(
    base: Path, rounds: int, gap: float, agent_bin: str | None = None
) -> tuple[list[float], float]:
    """Write → the reload_cmd's line in hand, per round, with ``gap`` seconds of quiet before each
    write (0: the next write as soon as the reload is seen); and the agent's RSS in MiB."""
    figures: list[float] = []
    async with agent_process(base, agent_bin) as (manage, child, fifo):
        for r in range(1, rounds + 2):  # round 1 warms up
            if gap:
                await asyncio.sleep(gap)  # a lone change: the agent has been idle this long
            start = time.time()
            await manage.put_data("/clusters/cb/env/w", {"v": str(r)})
            stamp, value = await reloaded(fifo)
            if value != f"v={r}":
                raise RuntimeError(f"the agent reloaded with {value!r} in round {r}")
            if r > 1:
                figures.append(stamp - start)
        rss = procs.memory_kib(child.pid) / 1024
    return figures, rss


async def burst(base: Path, runs: int) -> list[tuple[int, float]]:
    """BURST writes in a row to one agent's env, per run: (reloads, last write acked → final reload)."""
    out = []
    async with agent_process(base) as (manage, _child, fifo):
        for run in range(runs):
            first = run * BURST
            for i in range(first + 1, first + BURST + 1):
                await manage.put_data("/clusters/cb/env/w", {"v": str(i)})
            written = time.time()
            count, value, stamp = 0, "", 0.0
            while value != f"v={first + BURST}":
                stamp, value = await reloaded(fifo)
                count += 1
            out.append((count, stamp - written))
    return out


# Below this much growth in all, RSS cannot tell N agents from the process's own churn.
RSS_RESOLUTION_KIB = 16 * 1024


def _rss_kib() -> int:
    return procs.memory_kib(os.getpid())


def _settled_rss_kib() -> int:
    """RSS once what earlier runs freed is handed back to the system: otherwise the next run
    reuses it unseen, and its agents look smaller than they are (below zero, once)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        ctypes.CDLL(libc).malloc_trim(0)
    return _rss_kib()


async def light_mode_rows(counts: list[int], rounds: int) -> list[dict[str, float]]:
    """``light_mode`` as rows (what bench/propagation.py's light-mode table reads)."""
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-light-") as tmp:
        results = await light_mode(Path(tmp), counts, rounds)
    return [
        {
            "agents": count,
            "change_to_all_files_ms_median": round(statistics.median(figures) * 1000, 1),
            "change_to_all_files_ms_max": round(max(figures) * 1000, 1),
            "rss_kib_per_agent": round(per_agent, 1),
        }
        for count, figures, per_agent in results
    ]


async def light_mode(base: Path, counts: list[int], rounds: int) -> list[tuple[int, list[float], float]]:
    """N agents in this process on one metad, each with one resource and no reload_cmd (no fork
    from a process holding gRPC threads): (N, write → every agent's file shows it, KiB per agent)."""
    results = []
    async with private_metad(base) as (metad, manage, octet):
        for count in counts:
            await add_hosts(manage, octet, count)
            before = _settled_rss_kib()
            agents = [
                light_agent(base / f"light{count}" / f"vm{n}", metad.instance_url, _ip(octet, n))
                for n in range(count)
            ]
            tasks = [asyncio.create_task(a.run_forever()) for a in agents]
            try:
                await asyncio.wait_for(asyncio.gather(*(a.wait_rounds(1) for a in agents)), 300)
                per_agent = (_rss_kib() - before) / count
                figures = []
                for r in range(1, rounds + 1):
                    seen = [a.rounds for a in agents]
                    start = time.monotonic()
                    await manage.put_data("/clusters/cb/env/w", {"v": str(r)})
                    await asyncio.wait_for(
                        asyncio.gather(*(a.wait_rounds(s + 1) for a, s in zip(agents, seen, strict=True))),
                        300,
                    )
                    figures.append(time.monotonic() - start)
                    for n, a in enumerate(agents):
                        text = (a.config.root / "etc/v.conf").read_text()
                        if text != f"v={r} me={_ip(octet, n)}\n":
                            raise RuntimeError(f"agent {n} rendered {text!r} in round {r}")
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(a.close() for a in agents))
            await manage.delete_data("/clusters/cb")
            for n in range(count):
                await manage.delete_mapping(f"i-{n}")
            results.append((count, figures, per_agent))
    return results


async def run(quick: bool) -> list[Table]:
    seconds, rounds, runs, counts = (0.5, 5, 2, [10]) if quick else (3.0, 30, 5, [10, 100])
    rate, cold, p99, size = await asyncio.to_thread(render_throughput, seconds)
    render = Table(
        f"Render throughput: one {HOSTS}-host template ({size} bytes out)",
        ["templates/s (parse cached)", "per render p99", "first render (parse + render)", "confd"],
    )
    render.add(f"{rate:,.0f}", f"{ms(p99)} ms", f"{ms(cold)} ms", "no figure in ANCHORS")
    render.notes.append(
        "one core; each render builds the key space and confd's functions anew, as a round does"
    )

    with tempfile.TemporaryDirectory(prefix="pitrix-bench-agent-") as tmp:
        lone, rss = await one_agent(Path(tmp) / "lone", rounds, 0.2)
        tight, _ = await one_agent(Path(tmp) / "tight", rounds, 0.0)
    latency = Table(
        f"One agent: write → reload_cmd done ({rounds} rounds)",
        [
            "writes",
            "pitrix-agent (metad long-poll)",
            "confd -watch (ANCHORS)",
            "agent RSS (MiB)",
            "confd RSS",
        ],
    )
    latency.add("a lone change (0.2 s apart)", p50_p99(lone), CONFD_N1, f"{rss:.1f}", f"{CONFD_MIB}")
    latency.add("back to back (next write once the reload is seen)", p50_p99(tight), CONFD_N1, "", "")
    latency.notes += [
        "pitrix-agent is a process on metad (in the benchmark's process) on etcd; confd reads etcd directly",
        "back to back, each write lands after the agent's last round finished applying, so it is not "
        "taken for a burst (only changes that arrive during an apply wait for quiet_period)",
    ]

    with tempfile.TemporaryDirectory(prefix="pitrix-bench-agent-") as tmp:
        bursts = await burst(Path(tmp) / "burst", runs)
        light = await light_mode(Path(tmp) / "light", counts, rounds)
    coalesce = Table(
        f"Bursts: {BURST} management writes in a row to one agent's env",
        ["run", "reloads", "last write acked → final reload done (ms)"],
    )
    for i, (reloads, took) in enumerate(bursts, 1):
        coalesce.add(i, reloads, f"{took * 1000:.0f}")
    coalesce.notes.append(
        "quiet_period 0.05 s, max_settle 1 s (the defaults); the writes are sequential PUTs; "
        "confd has no window: one reload per change it sees"
    )
    many = Table(
        f"Light mode: N agents in one process on one metad ({rounds} rounds)",
        ["N agents", "write → every file shows it (median / max ms)", "RSS per agent (KiB)"],
    )
    for count, figures, per_agent in light:
        many.add(
            count,
            f"{statistics.median(figures) * 1000:.1f} / {max(figures) * 1000:.1f}",
            f"{per_agent:.0f}" if per_agent * count >= RSS_RESOLUTION_KIB else "-",
        )
    many.notes.append(
        f"RSS per agent only where the agents' whole share ({RSS_RESOLUTION_KIB // 1024} MiB or more) "
        "stands clear of what the benchmark process itself frees and takes meanwhile; Propagation's "
        "N=1,000 light row has it"
    )
    return [await footprint(quick), render, latency, coalesce, many]


async def footprint(quick: bool) -> Table:
    """One-shot CPU and RSS, and a watching agent's RSS, as ratios measured in this run."""
    runs = 5 if quick else 15
    here = Path(sys.executable).parent
    await asyncio.to_thread(agent_footprint.compile_tree)
    shots = [
        await asyncio.to_thread(agent_footprint.one_shot, here, "this venv (this tree)", runs, module=True)
    ]
    prod, why = await asyncio.to_thread(agent_footprint.production_venv)
    confd, confd_why = await asyncio.to_thread(agent_footprint.confd_binary)
    watch_rss: float | None = None
    file_watch: tuple[float, float | None] | None = None
    if prod is not None:
        shots.append(
            await asyncio.to_thread(agent_footprint.one_shot, prod, "production install", runs, module=False)
        )
        with tempfile.TemporaryDirectory(prefix="pitrix-bench-agent-") as tmp:
            _figures, watch_rss = await one_agent(Path(tmp) / "prod", 3, 0.0, str(prod / "pitrix-agent"))
        file_watch = await asyncio.to_thread(
            agent_footprint.watch_pair, [str(prod / "pitrix-agent")], agent_footprint.plain_env(), confd
        )
    counts = [await asyncio.to_thread(agent_footprint.counted, here, "this venv (this tree)", module=True)]
    if prod is not None:
        counts.append(
            await asyncio.to_thread(agent_footprint.counted, prod, "production install", module=False)
        )
    confd_count = await asyncio.to_thread(agent_footprint.confd_instructions, confd) if confd else None
    if confd is not None:
        confd_usage = await asyncio.to_thread(agent_footprint.confd_one_shot, confd, runs)
        confd_cpu, confd_mib, confd_label = confd_usage.cpu, confd_usage.mib, confd_why
    else:
        confd_cpu, confd_mib = agent_footprint.CONFD_ANCHOR_CPU, agent_footprint.CONFD_ANCHOR_MIB
        confd_label = "confd, ANCHORS (another host)"
    table = Table(
        f"Agent footprint: one-shot render of {agent_footprint.RESOURCES} templates (file backend), "
        "as ratios to a bare Python measured in the same run",
        [
            "interpreter",
            "bare `python -c pass`: CPU-s / MiB",
            "pitrix-agent -onetime: CPU-s / peak MiB",
            "CPU ÷ bare (goal ≤ 2.5)",
            "first run after a change (no parse cache): CPU-s / ÷ bare",
            f"÷ confd ({confd_label}): CPU / MiB",
        ],
    )
    for shot in shots:
        table.add(
            shot.label,
            f"{shot.bare.cpu:.3f} / {shot.bare.mib:.1f}",
            f"{shot.agent.cpu:.3f} / {shot.agent.mib:.1f}",
            f"{shot.agent.cpu / shot.bare.cpu:.2f}",
            f"{shot.cold.cpu:.3f} / {shot.cold.cpu / shot.bare.cpu:.2f}",
            f"{shot.agent.cpu / confd_cpu:.1f} / {shot.agent.mib / confd_mib:.2f}",
        )
    table.notes += [
        f"medians of {runs} runs, the bare interpreter, the agent and the agent without its parse cache "
        "interleaved; CPU is user + system and peak RSS is ru_maxrss, both from wait4 in a small "
        "spawner process (a child forked from this benchmark would carry its size into ru_maxrss)",
        "the agent keeps the parsed conf.d TOML and data YAML in its state directory, keyed by each "
        "file's inode, size, mtime and ctime (pitrix/agent/parsecache.py); the fixture's files are "
        "dated a minute back, as an image's are; the cold column deletes the cache before each run",
        f"confd's one-shot: {confd_cpu:.3f} CPU-s, {confd_mib:.1f} MiB ({confd_label}), the same fixture",
        "production install: `pip install .` without dev extras into a venv under ~/.cache/pitrix-bench "
        "(reinstalled when the source changes); the agent there runs with no PYTHONPATH",
        "this venv: the dev install (editable finder in site-packages, dev extras such as rich present), "
        "this tree on PYTHONPATH, its bytecode compiled first (`compileall`: an installed package has "
        "it; PYTHONDONTWRITEBYTECODE on this host would otherwise make every run compile the agent, "
        "which is what made the removed agent_oneshot section's 0.61 CPU-s)",
    ]
    confd_watch = file_watch[1] if file_watch is not None else None
    if prod is None:
        table.notes.append(f"no production install in this run: {why}")
    else:
        versus = (
            f"; ÷ confd -watch of this run (below): {watch_rss / confd_watch:.2f}× (goal ≤ 1)"
            if watch_rss is not None and confd_watch is not None
            else ""
        )
        table.notes.append(
            f"agent watching metad: VmRSS {watch_rss:.1f} MiB, a production-install pitrix-agent after "
            "3 changes applied (mutual TLS off: the rig's metad serves plain HTTP on loopback)" + versus
            if watch_rss is not None
            else "agent watching metad: no figure"
        )
    for count in counts:
        if count is None:
            continue
        table.notes.append(
            f"instructions (valgrind, which the host's load does not move), {count.label}: bare python "
            f"{count.bare:.0f} M, the one-shot {count.warm:.0f} M ({count.warm / count.bare:.2f}× bare), "
            f"without its parse cache {count.cold:.0f} M ({count.cold / count.bare:.2f}×)"
            + (f"; confd {confd_count:.0f} M" if confd_count is not None else "")
        )
    if file_watch is not None:
        agent_mib = file_watch[0]
        theirs = (
            f"confd -watch {confd_watch:.1f} MiB ({confd_label}): {agent_mib / confd_watch:.2f}×"
            if confd_watch is not None
            else f"confd -watch not built here ({confd_why}); ANCHORS' {CONFD_WATCH_MIB} MiB"
        )
        table.notes.append(
            f"watching the same file backend and resources, VmRSS after the first render: "
            f"production-install pitrix-agent -watch {agent_mib:.1f} MiB, {theirs} (goal ≤ 1)"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    args = parser.parse_args()
    logs.configure("error")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for table in aio.run(run(args.quick)):
        print(table.text())


if __name__ == "__main__":
    main()
