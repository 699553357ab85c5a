"""One metadata write → config re-rendered and reload_cmd finished on all N agents.

Real processes: an etcd, a `pitrix-metad` and N `pitrix-agent`s, each agent with its own loopback
address (metad knows it by that address) and its own root directory, watching one template resource
whose reload_cmd reads the rendered file and tells the benchmark, on a FIFO, the value it reloaded
with (the least a reload can do and still prove what it loaded). A round is one management `PUT`
of the role's env. Timestamps come from the agents themselves: the "change" log line (the
long-poll answered: the change is in hand) and "destination updated" (rendered and atomically
written); a reload ends when its line reaches the benchmark (stamped on arrival, so never early).
So the fan-out (the design: metad's long-poll release) is told apart from each agent's apply (its
own work, on cores shared with N-1 others).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers, procs
from bench.table import Table, ms, p50_p99, percentile
from pitrix.metad.client import MetadManagementClient
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

TITLE = "Propagation: one write → N agents re-rendered and reloaded"
CLUSTER = "/clusters/cb"
# confd's own figures (ANCHORS.md): one put → last of N agents finished its reload_cmd, straight on etcd.
CONFD = {1: "4.2 / 5.9", 10: "16.9 / 20.6", 100: "202 / 245"}
ETCD_ANCHOR = {1: "1.4 / 4.8", 1000: "40 / 62"}

TEMPLATE = 'v={{getv "/env/v"}} me={{getv "/host/ip"}}\n'
RESOURCE = """[template]
src = "v.tmpl"
dest = "/etc/v.conf"
keys = ["/env", "/host"]
reload_cmd = ". ./etc/v.conf; echo \\"{n} v=$v me=$me\\" > {fifo}"
"""
AGENT_TOML = """backend = "metad"
nodes = ["{url}"]
confdir = "/etc/confd"
prefix = "/self"
watch = true
log_level = "debug"

[pitrix]
state_dir = "/var/lib/pitrix-agent"
heartbeat_interval = 3600
"""


# What a profile of one agent over these rounds found (``PITRIX_BENCH_PYSPY``, and perf on the
# agent's pid); a note of the report, not a measurement of its run.
WHERE_AGENT_CPU_GOES = (
    "where an agent's CPU per change goes (N=1, perf and py-spy over 1,000 rounds, 2026-12-08): "
    "half in the kernel, half in the interpreter and its C modules. Kernel: creating the staged "
    "file, about a fifth of the agent's CPU on this host (its ext4 has no journal, and then "
    "allocating an inode steps over every inode freed in the last seconds, one per change here; "
    "confd's TempFile pays the same), the rename over the old file and the old inode's release "
    "(~7%), sockets and epoll (~9%), the vfork of reload_cmd (~3%). Interpreter: spread over the "
    "long-poll answer and the next request, the applied report, render and compare, spawning and "
    "reaping reload_cmd and the log lines, none alone a large part. The fsync of each staged "
    "config (dropped 2026-12-08, as confd never had it) cost 0.1-0.2 ms of CPU and 1.5-4 ms of "
    "waiting per change; an applied report per change cost metad and etcd about 0.75 ms per "
    "agent at N=10 (spaced by report_interval since)"
)


def _ts(entry_time: str) -> float:
    return datetime.datetime.fromisoformat(entry_time).timestamp()


class Fifo:
    """Lines written by reload commands, read without polling (the loop watches the fd)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # no EOF between writers
        self._buf = b""
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(self._fd, self._read)

    def _read(self) -> None:
        self._buf += os.read(self._fd, 1 << 16)
        *done, self._buf = self._buf.split(b"\n")
        for line in done:
            self._emit(line.decode())

    def _emit(self, line: str) -> None:
        self.lines.put_nowait(line)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        os.close(self._keep)


class StampedFifo(Fifo):
    """A Fifo whose lines carry the wall clock of their arrival: a reload command that read its
    own clock would pay a fork and an exec of `date` for it, on the cores every agent shares."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stamped: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

    def _emit(self, line: str) -> None:
        self.stamped.put_nowait((time.time(), line))


def settled(confd: Path) -> None:
    """Date conf.d back an hour, as an installed VM's is: the agent re-reads files modified in the
    last seconds every round (pitrix.agent.filecache), which no steady state pays."""
    hour_ago = time.time() - 3600
    for path in confd.rglob("*"):
        os.utime(path, (hour_ago, hour_ago))


@dataclass
class AgentLog:
    """One agent's JSON log file, read on from where the last round stopped."""

    path: Path
    offset: int = 0

    def events(self) -> dict[str, float]:
        """The last timestamp of each event logged since the previous call."""
        import json

        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        seen: dict[str, float] = {}
        for line in data[:cut].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "timestamp" in entry:
                seen[str(entry.get("event"))] = _ts(entry["timestamp"])
        return seen


CONFD_PREFIX = "/confd"
CONFD_TEMPLATE = 'v={{getv "/env/v"}}\n'
CONFD_RESOURCE = """[template]
src = "v.tmpl"
dest = "{root}/etc/v.conf"
keys = ["/env"]
reload_cmd = ". {root}/etc/v.conf; echo \\"{n} v=$v\\" > {fifo}"
"""


@dataclass
class PeerFigures:
    """confd -watch measured in this run: put → the last of N confd processes' reload_cmd done."""

    end_to_end: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    # CPU seconds per confd per measured round: confd, its reload commands, etcd's share.
    confd_cpu: float = 0.0
    reload_cpu: float = 0.0
    etcd_cpu: float = 0.0

    def cpu(self) -> str:
        return f"{self.confd_cpu * 1000:.2f} / {self.reload_cpu * 1000:.2f} / {self.etcd_cpu * 1000:.2f}"


async def confd_rounds(
    base: Path, etcd: EmbeddedEtcd, url: str, store: Store, binary: Path, count: int, rounds: int
) -> PeerFigures:
    """N ``confd -watch`` processes straight on the same etcd (mTLS, etcdv3 backend), each with its
    own confdir and the same kind of reload_cmd as the agents'; a round is one etcd put."""
    figures = PeerFigures()
    fifo = StampedFifo(base / "confd.fifo")
    key = f"{CONFD_PREFIX}/env/v"
    await store.put(key, "0")
    children: list[procs.Child] = []
    try:
        for n in range(count):
            root = base / f"confd{n}"
            (root / "etc/confd/conf.d").mkdir(parents=True)
            (root / "etc/confd/templates").mkdir(parents=True)
            (root / "etc/confd/templates/v.tmpl").write_text(CONFD_TEMPLATE)
            (root / "etc/confd/conf.d/v.toml").write_text(
                CONFD_RESOURCE.format(root=root, n=n, fifo=fifo.path)
            )
            argv = [
                str(binary),
                "-backend", "etcdv3", "-node", url, "-watch",
                "-prefix", f"/bench{CONFD_PREFIX}",
                "-confdir", str(root / "etc/confd"),
                "-config-file", str(root / "confd.toml"),
                "-client-ca-keys", str(etcd.pki_dir / "ca.crt"),
                "-client-cert", str(etcd.pki_dir / "client.crt"),
                "-client-key", str(etcd.pki_dir / "client.key"),
                "-log-level", "error",
            ]  # fmt: skip
            log = root / "confd.log"
            with log.open("ab") as out:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL, cwd=root
                )
            children.append(procs.Child(f"confd {n}", process, {}, log))

        async def round_done(value: str) -> float:
            reloaded: dict[str, float] = {}
            while len(reloaded) < count:
                try:
                    stamp, line = await asyncio.wait_for(fifo.stamped.get(), 120)
                except TimeoutError:
                    raise RuntimeError(
                        f"confd: {len(reloaded)} of {count} reloaded with {value} in 120 s: "
                        f"{procs.tail(children[0].log)}"
                    ) from None
                who, got = line.split(" ", 1)
                if got == value:
                    reloaded[who] = stamp
            return max(reloaded.values())

        await round_done("v=0")  # each one's first render at start: running and watching
        figures.rss_mib = sum(procs.memory_kib(c.pid) for c in children) / count / 1024
        meter = CpuMeter([c.pid for c in children], None, etcd.pid)
        for r in range(1, rounds + 2):  # round 1 warms up
            start = time.time()
            await store.put(key, str(r))
            last = await round_done(f"v={r}")
            if r > 1:
                figures.end_to_end.append(last - start)
            else:
                meter.start()
        figures.confd_cpu, figures.reload_cpu, _, figures.etcd_cpu = meter.per_round(rounds)
    finally:
        await asyncio.gather(*(c.stop() for c in children))
        fifo.close()
    return figures


@dataclass
class Figures:
    fanout: list[float] = field(default_factory=list)  # write → last agent has the change
    end_to_end: list[float] = field(default_factory=list)  # write → last agent's reload finished
    apply: list[float] = field(default_factory=list)  # per agent: render + atomic write
    apply_reload: list[float] = field(default_factory=list)  # per agent: change in hand → reload done
    etcd: list[float] = field(default_factory=list)  # put → last of N raw etcd watchers
    rss_mib: float = 0.0
    confd: PeerFigures | None = None  # confd -watch on the same etcd, this run (None: not built)
    connections: float = 0.0  # per agent, to metad's instance port, after the rounds
    # CPU seconds per agent per measured round: the agent, its reload commands, metad's and etcd's
    # shares (etcd's: the agents' status reports, each a write).
    agent_cpu: float = 0.0
    reload_cpu: float = 0.0
    metad_cpu: float = 0.0
    etcd_cpu: float = 0.0

    @property
    def round_cpu(self) -> float:
        """CPU seconds one agent's part of a round costs, all four together."""
        return self.agent_cpu + self.reload_cpu + self.metad_cpu + self.etcd_cpu


async def etcd_watch_rounds(store: Store, count: int, rounds: int) -> list[float]:
    """put → the last of ``count`` watchers (aetcd, one client) has the event."""
    got: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in range(count)]

    since = await store.put("/raw/k", b"start") + 1  # a watch set up late still sees every round

    async def watcher(q: asyncio.Queue[float]) -> None:
        async for _batch in store.watch_prefix("/raw/", since):
            q.put_nowait(time.monotonic())

    tasks = [asyncio.create_task(watcher(q)) for q in got]
    figures = []
    try:
        for r in range(rounds + 1):  # round 0 waits until every watch is established
            start = time.monotonic()
            await store.put("/raw/k", str(r).encode())
            last = max([await asyncio.wait_for(q.get(), 60) for q in got])
            if r:
                figures.append(last - start)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return figures


@dataclass
class CpuMeter:
    """CPU seconds between two readings, per watcher per round: the watchers (agents, or confd
    processes), the reload commands they reaped, metad and etcd (each shared by every watcher)."""

    watchers: list[int]
    metad: int | None
    etcd: int | None
    _start: tuple[float, ...] = ()

    def _read(self) -> tuple[float, ...]:
        return (
            sum(procs.cpu_ns(pid) for pid in self.watchers) / 1e9,
            sum(procs.cpu_seconds(pid, children=True) for pid in self.watchers),
            procs.cpu_ns(self.metad) / 1e9 if self.metad else 0.0,
            procs.cpu_ns(self.etcd) / 1e9 if self.etcd else 0.0,
        )

    def start(self) -> None:
        self._start = self._read()

    def per_round(self, rounds: int) -> tuple[float, ...]:
        """Watcher, reload commands, metad's share, etcd's share."""
        per = len(self.watchers) * rounds
        return tuple((e - s) / per for e, s in zip(self._read(), self._start, strict=True))


@dataclass
class Sampler:
    """py-spy on agent 0 over the measured rounds, when ``PITRIX_BENCH_PYSPY`` names a directory:
    where one agent's CPU per round goes. Python frames, sampled without stopping the agent; with
    ``PITRIX_BENCH_PYSPY_NATIVE`` set, C frames too (the TLS and JSON under the Python ones), but
    then py-spy stops the agent for each sample and a sample in a system call counts its wait.
    py-spy's own CPU is on the same cores: a profiled run's times and CPU are not the report's."""

    process: asyncio.subprocess.Process | None = None

    @classmethod
    async def start(cls, pid: int, base: Path) -> Sampler:
        out = os.environ.get("PITRIX_BENCH_PYSPY")
        if not out:
            return cls()
        target = Path(out) / f"agent-n{base.name}-{pid}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        argv = [procs.bin_path("py-spy"), "record", "--pid", str(pid), "--rate", "1000"]
        if os.environ.get("PITRIX_BENCH_PYSPY_NATIVE"):
            argv.append("--native")
        else:
            argv.append("--nonblocking")
        argv += ["--format", "raw", "--output", str(target)]
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        return cls(process)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
            await self.process.wait()


async def agents_rounds(
    base: Path,
    manage: MetadManagementClient,
    url: str,
    octet: int,
    count: int,
    rounds: int,
    metad_pid: int,
    etcd_pid: int | None,
) -> Figures:
    figures = Figures()
    fifo = StampedFifo(base / "reloads.fifo")
    await manage.post_data(CLUSTER, {"cluster": {"cluster_id": "cb"}, "env": {"w": {"v": "0"}}})
    children: list[procs.Child] = []
    logs: list[AgentLog] = []
    sampler = Sampler()
    try:
        for n in range(count):
            ip = procs.host_ip(octet, n)
            await manage.put_data(f"{CLUSTER}/hosts/w/i-{n}", {"ip": ip, "role": "w"})
            await manage.put_mapping(f"i-{n}", {"cluster_id": "cb", "role": "w", "ip": ip})
            root = base / f"vm{n}"
            (root / "etc/confd/conf.d").mkdir(parents=True)
            (root / "etc/confd/templates").mkdir(parents=True)
            (root / "etc/pitrix").mkdir(parents=True)
            (root / "var/log").mkdir(parents=True)
            (root / "etc/confd/templates/v.tmpl").write_text(TEMPLATE)
            (root / "etc/confd/conf.d/v.toml").write_text(RESOURCE.format(n=n, fifo=fifo.path))
            (root / "etc/pitrix/agent.toml").write_text(AGENT_TOML.format(url=url))
            settled(root / "etc/confd")
            log = root / "agent.log"
            env = {"PITRIX_VM_ROOT": str(root), "PITRIX_VM_IP": ip, "PITRIX_VM_ID": f"i-{n}"}
            children.append(await procs.spawn(f"agent {n}", [procs.bin_path("pitrix-agent")], log, env))
            logs.append(AgentLog(log))
        await asyncio.gather(*(procs.ready(c, lg.path, 300) for c, lg in zip(children, logs, strict=True)))
        while not fifo.stamped.empty():  # first rounds' reloads
            fifo.stamped.get_nowait()
        figures.rss_mib = sum(procs.memory_kib(c.pid) for c in children) / count / 1024
        meter = CpuMeter([c.pid for c in children], metad_pid, etcd_pid)
        for r in range(1, rounds + 2):  # round 1 warms up
            for lg in logs:
                lg.events()
            start = time.time()
            await manage.put_data(f"{CLUSTER}/env/w", {"v": str(r)})
            reloaded: dict[int, float] = {}
            while len(reloaded) < count:
                stamp, line = await asyncio.wait_for(fifo.stamped.get(), 120)
                agent, value, _me = line.split(" ", 2)
                if value != f"v={r}":
                    raise RuntimeError(f"agent {agent} reloaded with {value!r} in round {r}")
                reloaded[int(agent)] = stamp
            if r == 1:
                meter.start()
                sampler = await Sampler.start(children[0].pid, base)
                continue
            changes = []
            for n, lg in enumerate(logs):
                seen = lg.events()
                change = seen.get("change")
                if change is None:
                    raise RuntimeError(f"agent {n} logged no change in round {r}: {sorted(seen)}")
                changes.append(change)
                figures.apply.append(seen["destination updated"] - change)
                figures.apply_reload.append(reloaded[n] - change)
            figures.fanout.append(max(changes) - start)
            figures.end_to_end.append(max(reloaded.values()) - start)
        figures.agent_cpu, figures.reload_cpu, figures.metad_cpu, figures.etcd_cpu = meter.per_round(rounds)
        figures.connections = procs.connections_to(url) / count
    finally:
        await sampler.stop()
        await asyncio.gather(*(c.stop() for c in children))
        fifo.close()
        with contextlib.suppress(Exception):
            await manage.delete_data(CLUSTER)
        for n in range(len(children)):
            with contextlib.suppress(Exception):
                await manage.delete_mapping(f"i-{n}")
    return figures


async def measure(counts: list[int], rounds: int, confd: Path | None = None) -> dict[int, Figures]:
    results: dict[int, Figures] = {}
    base = Path(tempfile.mkdtemp(prefix="pitrix-bench-prop-"))
    octet = procs.private_net()
    etcd = EmbeddedEtcd(base / "etcd", unsafe_no_fsync=True)
    metad: procs.Child | None = None
    try:
        url = await etcd.start()
        store = await Store.connect([url], prefix="/bench", tls=etcd.client_tls)
        metad = await procs.start(
            "pitrix-metad",
            [
                procs.bin_path("pitrix-metad"),
                "--listen-ip",
                f"127.{octet}.255.1",
                "--instance-port",
                "0",
                "--manage-port",
                "0",
                "--etcd",
                url,
                "--etcd-cacert",
                str(etcd.pki_dir / "ca.crt"),
                "--etcd-cert",
                str(etcd.pki_dir / "client.crt"),
                "--etcd-key",
                str(etcd.pki_dir / "client.key"),
                "--prefix",
                "/bench",
                "--log-level",
                "warning",
            ],
            base / "metad.log",
        )
        async with MetadManagementClient(metad.ready["manage_url"]) as manage:
            for count in counts:
                etcd_figures = await etcd_watch_rounds(store, count, rounds)
                run_dir = base / f"n{count}"
                run_dir.mkdir()
                results[count] = await agents_rounds(
                    run_dir, manage, metad.ready["instance_url"], octet, count, rounds, metad.pid, etcd.pid
                )
                results[count].etcd = etcd_figures
                if confd is not None:
                    peer_dir = base / f"confd-n{count}"
                    peer_dir.mkdir()
                    results[count].confd = await confd_rounds(
                        peer_dir, etcd, url, store, confd, count, rounds
                    )
                    await asyncio.to_thread(shutil.rmtree, peer_dir, True)
                await asyncio.to_thread(shutil.rmtree, run_dir, True)
        await store.close()
    finally:
        if metad is not None:
            await metad.stop()
        await etcd.stop()
        await asyncio.to_thread(shutil.rmtree, base, True)
    return results


async def run(quick: bool) -> list[Table]:
    # 100 rounds: with 20 the p99 was the single slowest round, which on a shared host says more
    # about its neighbours than about the design.
    counts, rounds = ([1, 10], 5) if quick else ([1, 10, 100], 100)
    confd = await asyncio.to_thread(peers.ensure, "confd")
    results = await measure(counts, rounds, confd.path)
    cores = len(os.sched_getaffinity(0))
    fan = Table(
        f"Fan-out and end to end ({rounds} rounds per N)",
        [
            "N agents",
            "write → last agent has it",
            "write → last reload done",
            f"CPU floor: N × CPU per round ÷ {cores} cores",
            f"confd -watch ({confd.label()})",
            "pitrix ÷ confd (p50 / p99)",
            "raw etcd: put → last of N watchers",
            "RSS per agent (MiB)",
            "connections to metad per agent",
        ],
    )
    per = Table(
        "Each agent's own work (every agent, every round)",
        [
            "N agents",
            "render + atomic write",
            "change in hand → reload_cmd done",
            "samples",
            "CPU ms per round: agent / its reload_cmd / metad's share / etcd's share",
            "confd -watch, same rounds: confd / its reload_cmd / etcd's share",
        ],
    )
    for count, f in results.items():
        fan.add(
            count,
            p50_p99(f.fanout),
            p50_p99(f.end_to_end),
            f"{count * f.round_cpu * 1000 / cores:.1f}" if count >= cores else "-",
            p50_p99(f.confd.end_to_end) if f.confd else CONFD.get(count, "-"),
            confd_ratio(f, count),
            p50_p99(f.etcd),
            f"{f.rss_mib:.1f}",
            f"{f.connections:.1f}",
        )
        cpu = f"{f.agent_cpu * 1000:.2f} / {f.reload_cpu * 1000:.2f} / {f.metad_cpu * 1000:.2f}"
        cpu += f" / {f.etcd_cpu * 1000:.2f}"
        peer_cpu = f.confd.cpu() if f.confd else "-"
        per.add(count, p50_p99(f.apply), p50_p99(f.apply_reload), len(f.apply), cpu, peer_cpu)
    fan.notes += [
        "agents are `pitrix-agent` processes on metad's long-poll; confd's column talks to etcd directly",
        "raw etcd: N watches on one aetcd client in the benchmark process, the same etcd, the same run "
        f"(ANCHORS: N=1 {ETCD_ANCHOR[1]}, N=1,000 {ETCD_ANCHOR[1000]})",
        *confd_notes(confd, results),
        "connections to metad: established TCP connections to its instance port after the rounds, per "
        "agent (from /proc/net/tcp); metad holds as many for each instance, each a descriptor and, "
        "under mutual TLS, its memory",
        "CPU floor: the CPU one round costs (every agent's, its reload_cmd's, metad's and etcd's share, "
        "from the table below) spread evenly over the cores, the end to end a perfect schedule "
        "would reach; it moves with the host's speed, as every figure here does. Below as many "
        "agents as cores the work of a round is one chain and cannot spread: no figure",
    ]
    per.notes.append(
        "reload_cmd is `sh -c` that sources the rendered file (shell assignments) and writes the value "
        "it reloaded with to a FIFO (checked every round), on the same cores as every other agent; "
        "the benchmark stamps each line as it arrives (the `date` the command ran for its own clock "
        "until 2026-12-04 cost a fork and an exec: 1.45 ms of CPU per reload instead of 0.50)"
    )
    per.notes.append(
        "CPU per round from /proc, over every agent and measured round: the agent process, and "
        "metad's and etcd's CPU over the agents (the scheduler's ns), the reload commands each agent "
        "reaped (10 ms ticks: ±0.5 ms at N=1); etcd's share is mostly the agents' status reports "
        "(one write each per change), which confd does not make. "
        "N agents on 2 cores need N × the four columns of CPU per round, half of it in wall time "
        "at best"
    )
    per.notes.append(
        "confd's CPU the same way over its own rounds: each confd process, the reload commands it "
        "reaped, etcd's CPU over the N processes (its watch events)"
    )
    worst = max(results)
    per.notes.append(f"apply p99 at N={worst}: {ms(percentile(results[worst].apply, 99))} ms")
    per.notes.append(WHERE_AGENT_CPU_GOES)
    light_n = 100 if quick else 1000
    fan.notes.append(f"N={light_n:,}: in light mode, the table below")
    return [fan, per, await light_table(light_n, 5 if quick else 20)]


async def light_table(count: int, rounds: int) -> Table:
    """N agents past what this machine holds as processes: the real agent code as tasks of one process
    (the simulator's light mode), on an in-process metad. Imported here: bench.agent imports this module."""
    from bench.agent import light_mode_rows

    (row,) = await light_mode_rows([count], rounds)
    table = Table(
        f"Light mode: N={count:,} agents in one process ({rounds} rounds)",
        ["N agents", "write → every agent's file shows it (median / max)", "RSS per agent (KiB)"],
    )
    table.add(
        f"{count:,}",
        f"{row['change_to_all_files_ms_median']:.1f} / {row['change_to_all_files_ms_max']:.1f}",
        f"{row['rss_kib_per_agent']:.0f}",
    )
    table.notes += [
        "agents are tasks of the benchmark's process (as in `pitrix-sim --light`), each with its own "
        "loopback address and root, on a metad in the same process: one core runs metad and all N agents",
        "no reload_cmd (no fork from a process holding gRPC threads): the end is every agent's rendered "
        "file, so this is fan-out plus render, not the process table's end to end",
        f"raw etcd at N=1,000 (ANCHORS): {ETCD_ANCHOR[1000]}",
    ]
    return table


def confd_ratio(f: Figures, count: int) -> str:
    """pitrix's end to end over confd's, p50 and p99: this run's confd, else ANCHORS' (labelled)."""
    if f.confd is not None:
        theirs, label = [percentile(f.confd.end_to_end, q) for q in (50, 99)], ""
    elif count in CONFD:
        theirs, label = [float(x) / 1000 for x in CONFD[count].split(" / ")], " (anchor)"
    else:
        return "-"
    ours = [percentile(f.end_to_end, q) for q in (50, 99)]
    return f"{ours[0] / theirs[0]:.2f}× / {ours[1] / theirs[1]:.2f}×{label}"


def confd_notes(confd: peers.Built, results: dict[int, Figures]) -> list[str]:
    if confd.path is None:
        return [
            f"confd not measured in this run ({confd.why}): its column and ratio are ANCHORS.md's, "
            "from another host; confd uses 27 MiB per process (ANCHORS)"
        ]
    rss = [f"N={n}: {f.confd.rss_mib:.1f}" for n, f in results.items() if f.confd is not None]
    return [
        f"confd -watch measured in this run, minutes apart on the same host: {confd.name} built from "
        f"source at {confd.commit[:12]} (bench/peers.py), N processes on the same etcd (etcdv3 "
        "backend, mTLS), the same reload_cmd and FIFO; a round is one etcd put",
        f"confd RSS per process (MiB): {', '.join(rss)}",
    ]


def main() -> None:
    """``python -m bench.propagation [--counts 10,100] [--rounds 20]``: the process rows alone, with
    confd -watch beside them (no light-mode table), for a run smaller than the report's."""
    import argparse

    from pitrix import aio, logs

    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=TITLE)
    parser.add_argument("--counts", default="10,100", help="agent counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    counts = [int(n) for n in args.counts.split(",")]
    logs.configure("error")

    async def both() -> None:
        confd = await asyncio.to_thread(peers.ensure, "confd")
        results = await measure(counts, args.rounds, confd.path)
        for count, f in results.items():
            theirs = p50_p99(f.confd.end_to_end) if f.confd else "-"
            print(
                f"N={count}: pitrix-agent {p50_p99(f.end_to_end)} ms, confd -watch ({confd.label()}) "
                f"{theirs} ms, ratio {confd_ratio(f, count)}; RSS agent {f.rss_mib:.1f} MiB, confd "
                f"{f.confd.rss_mib if f.confd else 0:.1f} MiB; CPU ms per round per agent: agent "
                f"{f.agent_cpu * 1000:.2f}, reload_cmd {f.reload_cpu * 1000:.2f}, metad's share "
                f"{f.metad_cpu * 1000:.2f}, etcd's share {f.etcd_cpu * 1000:.2f}; confd / reload_cmd / "
                f"etcd's share {f.confd.cpu() if f.confd else '-'}"
            )
        for note in confd_notes(confd, results):
            print(f"  * {note}")

    aio.run(both())


if __name__ == "__main__":
    main()
