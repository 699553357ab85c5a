"""Benchmark: N in-process agents (the simulator's light mode) on one metad.

Run: ``.venv/bin/python -m tests.agent.bench_agents --agents 10 100 --rounds 5``.
Each agent has its own VM root, address and one template resource on the role's env; a round is
one management write to that env and its figure the time until every agent's file shows the new
value (read back from disk). Also reported: resident memory per agent. Real etcd, real metad,
real files and one outgoing address per agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pitrix import aio, logs
from pitrix.agent.agent import Agent, build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


def _ip(n: int) -> str:
    return f"127.{120 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _make_agent(base: Path, n: int, url: str) -> Agent:
    root = base / f"vm{n}"
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/confd/templates/v.tmpl").write_text('v={{getv "/env/v"}} me={{getv "/host/ip"}}\n')
    (root / "etc/confd/conf.d/v.toml").write_text(
        '[template]\nsrc = "v.tmpl"\ndest = "/etc/v.conf"\nkeys = ["/env", "/host"]\n'
    )
    config = load_config(
        root, None, Overrides(backend="metad", nodes=[url], watch=True), environ={"PITRIX_VM_IP": _ip(n)}
    )
    config.heartbeat_interval = 30.0
    return build_agent(config, announce=lambda _i: None)


async def bench(counts: list[int], rounds: int) -> list[dict[str, float]]:
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        etcd = EmbeddedEtcd(base / "etcd", unsafe_no_fsync=True)
        store = await Store.connect([await etcd.start()], prefix="/bench")
        metad = Metad(store, "127.119.0.1", 0, 0, wait_timeout=60.0)
        await metad.start()
        manage = MetadManagementClient(metad.manage_url)
        try:
            for count in counts:
                await manage.post_data(
                    "/clusters/cb", {"cluster": {"cluster_id": "cb"}, "env": {"w": {"v": "0"}}}
                )
                for n in range(count):
                    await manage.put_data(f"/clusters/cb/hosts/w/i-{n}", {"ip": _ip(n), "role": "w"})
                    await manage.put_mapping(f"i-{n}", {"cluster_id": "cb", "role": "w", "ip": _ip(n)})
                before = _rss_kib()
                agents = [
                    await _make_agent(base / f"run{count}", n, metad.instance_url) for n in range(count)
                ]
                tasks = [asyncio.create_task(a.run_forever()) for a in agents]
                await asyncio.gather(*(a.wait_rounds(1) for a in agents))
                per_agent = (_rss_kib() - before) / count
                figures = []
                for r in range(1, rounds + 1):
                    seen = [a.rounds for a in agents]
                    start = time.monotonic()
                    await manage.put_data("/clusters/cb/env/w", {"v": str(r)})
                    await asyncio.gather(*(a.wait_rounds(s + 1) for a, s in zip(agents, seen, strict=True)))
                    figures.append(time.monotonic() - start)
                    for n, a in enumerate(agents):
                        text = (a.config.root / "etc/v.conf").read_text()
                        assert text == f"v={r} me={_ip(n)}\n", text
                for a in agents:
                    a.stop()
                await asyncio.gather(*tasks)
                await asyncio.gather(*(a.close() for a in agents))
                await manage.delete_data("/clusters/cb")
                results.append(
                    {
                        "agents": count,
                        "change_to_all_files_ms_median": round(statistics.median(figures) * 1000, 1),
                        "change_to_all_files_ms_max": round(max(figures) * 1000, 1),
                        "rss_kib_per_agent": round(per_agent, 1),
                    }
                )
        finally:
            await manage.close()
            await metad.stop()
            await store.close()
            await etcd.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logs.configure("error")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for row in aio.run(bench(args.agents, args.rounds)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
