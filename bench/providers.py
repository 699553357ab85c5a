"""What one cluster step costs through each provider: create N instances, wait for them, find them
by name prefix, terminate them, and how long a single lookup takes.

qingcloud and openstack drive the in-process simulator (real VMs: directories and processes);
aws drives a moto server in a process of its own (no VMs, so its figures are the provider's and
moto's overhead only).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.table import Table, ms, p50_p99
from pitrix.providers.base import InstanceSpec, Provider
from pitrix.providers.registry import load_provider
from simulator.cloud import Simulator
from simulator.testing import random_network

TITLE = "Providers: one create/wait/find/terminate round per cloud"
MOTO = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@asynccontextmanager
async def moto_endpoint() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MOTO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), 60))
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 30)


async def aws_image(provider: Provider) -> str:
    ec2 = await provider._ec2()  # type: ignore[attr-defined]
    images = (await ec2.describe_images(Owners=["amazon"]))["Images"]
    return str(sorted(i["ImageId"] for i in images)[0])


async def round_trip(provider: Provider, image: str, count: int, lookups: int) -> dict[str, Any]:
    cid = f"bench{os.getpid()}"
    specs = [
        InstanceSpec(
            name=f"{cid}-n{i}", image=image, userdata="#!/bin/sh\ntrue\n", tags={"pitrix:cluster": cid}
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    created = await provider.run_instances(specs)
    ran = time.perf_counter()
    ids = [i.instance_id for i in created]
    await provider.wait_running(ids, timeout=300)
    running = time.perf_counter()
    latencies = []
    for _ in range(lookups):
        t = time.perf_counter()
        found = await provider.describe_instances(name_prefix=f"{cid}-")
        latencies.append(time.perf_counter() - t)
    if len(found) != count:
        raise RuntimeError(f"{provider.name}: found {len(found)} of {count} instances by prefix")
    t = time.perf_counter()
    await provider.terminate_instances(ids)
    return {
        "run": ran - started,
        "running": running - started,
        "lookups": latencies,
        "terminate": time.perf_counter() - t,
    }


async def run(quick: bool) -> list[Table]:
    count, lookups = (5, 10) if quick else (20, 50)
    table = Table(
        f"{count} instances per cloud",
        [
            "provider",
            "RunInstances (all)",
            "until all running",
            "lookup by prefix p50 / p99 ms",
            "terminate all",
        ],
        notes=[
            "qingcloud, openstack: the simulator runs in this process and shares its loop with the client.",
            "aws: moto in its own process, no VMs behind it; credentials are fake and unchecked here.",
            "openstack calls run in worker threads (openstacksdk is synchronous), at most 8 creates at once.",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        sim = Simulator(Path(tmp) / "sim", network=random_network())
        await sim.start()
        try:
            credentials = sim.credentials
            clouds: list[tuple[str, dict[str, Any], str]] = [
                ("qingcloud", sim.runtime(), "pitrix-metadata"),
                (
                    "openstack",
                    {
                        "auth_url": f"{sim.url}/identity/v3",
                        "username": credentials["access_key_id"],
                        "password": credentials["secret_access_key"],
                        "project_name": "pitrix",
                    },
                    "pitrix-metadata",
                ),
            ]
            async with moto_endpoint() as endpoint:
                aws_runtime = {
                    "region": "us-east-1",
                    "endpoint": endpoint,
                    "access_key_id": "bench",
                    "secret_access_key": "bench",
                }
                clouds.append(("aws", aws_runtime, ""))
                for name, runtime, image in clouds:
                    provider = load_provider(name, runtime)
                    try:
                        figures = await round_trip(
                            provider, image or await aws_image(provider), count, lookups
                        )
                    finally:
                        await provider.close()
                    table.add(
                        name,
                        f"{ms(figures['run'])} ms",
                        f"{ms(figures['running'])} ms",
                        p50_p99(figures["lookups"]),
                        f"{ms(figures['terminate'])} ms",
                    )
        finally:
            await sim.stop()
    return [table]
