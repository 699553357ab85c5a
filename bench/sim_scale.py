"""Scale check of the simulator's light mode: N VMs boot, then every one answers over SSH.

Prints one JSON object of figures: boot rate (RunInstances to every job successful), SSH rate
(connect with the pinned host key, run ``hostname``, check the answer), resident memory per VM, and
how long terminating them all takes. Run: ``.venv/bin/python -m bench.sim_scale [--count 1000] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

from pitrix import aio
from simulator.cloud import Simulator
from simulator.testing import call, wait_job

TITLE = "Simulator light mode: N VMs boot, then answer over SSH"
BATCH = 100  # QingCloud's largest RunInstances count
# A light VM's image: pitrix-metadata carries the full-VM marker (its etcd and metad must run), so a
# light simulator boots it as a process-backed VM, which is not what this measures.
IMAGE = "demo"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def describe_all(sim: Simulator, ids: list[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        params = {f"instances.{n}": iid for n, iid in enumerate(chunk, 1)} | {"limit": BATCH}
        items.extend((await call(sim, "DescribeInstances", params))["instance_set"])
    return items


async def ssh_check(item: dict[str, Any], key: asyncssh.SSHKey, limit: asyncio.Semaphore) -> None:
    ip = item["vxnets"][0]["private_ip"]
    known = asyncssh.import_known_hosts(f"[{ip}]:{item['ssh_port']} {item['ssh_host_key']}\n")
    async with (
        limit,
        asyncssh.connect(
            ip, item["ssh_port"], username="root", client_keys=[key], known_hosts=known, agent_path=None
        ) as conn,
    ):
        result = await conn.run("hostname", check=True)
    if result.stdout != f"{item['instance_id']}\n":
        raise RuntimeError(f"{item['instance_id']}: hostname answered {result.stdout!r}")


async def bench(count: int, network: str, parallel_ssh: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sim-scale-") as tmp:
        async with Simulator(Path(tmp) / "sim", network=network, light=True) as sim:
            kp = await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
            key = asyncssh.import_private_key(kp["private_key"])
            rss_before = rss_kib()

            started = time.monotonic()
            ids: list[str] = []
            jobs: list[str] = []
            for start in range(0, count, BATCH):
                reply = await call(
                    sim,
                    "RunInstances",
                    {
                        "image_id": IMAGE,
                        "count": min(BATCH, count - start),
                        "instance_name": "scale",
                        "vxnets.1": "vxnet-0",
                        "login_mode": "keypair",
                        "login_keypair": kp["keypair_id"],
                    },
                )
                if reply["ret_code"] != 0:
                    raise RuntimeError(f"RunInstances: {reply}")
                ids.extend(reply["instances"])
                jobs.append(reply["job_id"])
            for job in jobs:
                status = await wait_job(sim, job, timeout=600)
                if status != "successful":
                    raise RuntimeError(f"job {job} {status}")
            boot_s = time.monotonic() - started
            rss_booted = rss_kib()

            items = await describe_all(sim, ids)
            started = time.monotonic()
            limit = asyncio.Semaphore(parallel_ssh)
            await asyncio.gather(*(ssh_check(item, key, limit) for item in items))
            ssh_s = time.monotonic() - started
            rss_after_ssh = rss_kib()

            started = time.monotonic()
            for start in range(0, count, BATCH):
                chunk = ids[start : start + BATCH]
                reply = await call(
                    sim, "TerminateInstances", {f"instances.{n}": iid for n, iid in enumerate(chunk, 1)}
                )
                await wait_job(sim, reply["job_id"], timeout=600)
            terminate_s = time.monotonic() - started
    return {
        "vms": count,
        "boot_seconds": round(boot_s, 2),
        "boot_rate_per_s": round(count / boot_s, 1),
        "ssh_seconds": round(ssh_s, 2),
        "ssh_logins_per_s": round(count / ssh_s, 1),
        "ssh_parallel": parallel_ssh,
        "rss_mib_before": round(rss_before / 1024, 1),
        "rss_mib_booted": round(rss_booted / 1024, 1),
        "rss_kib_per_vm": round((rss_booted - rss_before) / count, 1),
        "rss_mib_after_ssh": round(rss_after_ssh / 1024, 1),  # client and server sides, one process
        "terminate_seconds": round(terminate_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 VMs instead of --count (a smoke run)")
    parser.add_argument("--parallel-ssh", type=int, default=50)
    parser.add_argument("--network", default=f"127.{random.randint(101, 254)}.0.0/16")
    args = parser.parse_args()
    if args.count < 1:
        sys.exit("--count: must be at least 1")
    figures = aio.run(bench(100 if args.quick else args.count, args.network, args.parallel_ssh))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
