"""/metrics of a real pitrixd, read with Prometheus' own parser: request metrics by route
template, the job queue by action, silent nodes, build info, and deleted clusters kept out of
the state gauge."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from api_helpers import APP, DEAD_CLOUD
from prometheus_client.parser import text_string_to_metric_families

from pitrix import __version__
from pitrix.api.events import Event
from pitrix.api.metrics import Metrics

ADMIN = "exposition-admin-token-0123"
BIN = Path(sys.executable).parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def pitrixd(etcd_url: str, etcd_env: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    """One job slot, and a cloud that refuses every call retried for minutes: the first create
    keeps running, the second waits for the slot."""
    env = dict(
        os.environ,
        **etcd_env,
        PITRIX_ETCD__PREFIX=f"/exposition-{secrets.token_hex(4)}",
        PITRIX_API__TOKENS=json.dumps([{"token": ADMIN, "owner": "ops", "admin": True}]),
        PITRIX_RUNTIME__STEP_RETRY__ATTEMPTS="1000",
        PITRIX_RUNTIME__STEP_RETRY__FIRST_DELAY="5",
        PITRIX_RUNTIME__STEP_RETRY__MAX_DELAY="5",
    )
    log = (tmp_path / "pitrixd.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(tmp_path / "state"), "--api-listen", "127.0.0.1:0",
        "--etcd", etcd_url, "--max-jobs", "1", stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, (tmp_path / "pitrixd.log").read_text()
        yield json.loads(line)["url"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        log.close()


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by name and labels, and each family's type (the parser refuses bad syntax)."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics_exposition_of_a_real_pitrixd(pitrixd: str) -> None:
    async with aiohttp.ClientSession(pitrixd, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        assert (await http.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
        assert (await http.post("/v1/apps", json=APP)).status == 201
        body = {"runtime": "dead", "app": f"{APP['name']}@{APP['version']}"}
        for _ in range(2):
            assert (await http.post("/v1/clusters", json=body)).status == 202
        assert (await http.get("/v1/clusters/no-such-cluster")).status == 404
        assert (await http.get("/v1/clusters/other-missing-one")).status == 404
        assert (await http.get("/no/such/path")).status == 404

        deadline = time.monotonic() + 60
        while True:  # the second job journals its wait for the slot just after it is accepted
            samples, types = parse(await (await http.get("/metrics")).text())
            running = value(samples, "pitrix_jobs", action="create", state="running")
            queued = value(samples, "pitrix_jobs", action="create", state="queued")
            if (running, queued) == (1.0, 1.0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (running, queued) == (1.0, 1.0)

    assert types["pitrix_jobs"] == "gauge"
    assert value(samples, "pitrix_jobs", action="scale_out", state="running") == 0.0  # idle, yet there
    # Requests by route template: both missing ids are one series, an unknown path is "unmatched".
    assert types["pitrix_http_requests"] == "counter"  # the parser strips _total off the family
    get = {"method": "GET"}
    assert (
        value(samples, "pitrix_http_requests_total", **get, route="/v1/clusters/{cid}", status="404") == 2.0
    )
    assert value(samples, "pitrix_http_requests_total", **get, route="unmatched", status="404") == 1.0
    assert (
        value(samples, "pitrix_http_requests_total", method="POST", route="/v1/clusters", status="202") == 2.0
    )
    assert types["pitrix_http_request_duration_seconds"] == "histogram"
    count = value(
        samples,
        "pitrix_http_request_duration_seconds_count",
        method="POST",
        route="/v1/clusters",
        status="202",
    )
    assert count == 2.0
    assert not any("no-such-cluster" in str(labels) for _, labels in samples)
    # Build info, silent nodes (none: no node of these clusters ever ran), live states only.
    assert types["pitrix_build_info"] == "gauge"  # an Info is a gauge of 1 in the text format
    assert value(samples, "pitrix_build_info", version=__version__, python=sys.version.split()[0]) == 1.0
    assert value(samples, "pitrix_nodes_silent") == 0.0
    assert value(samples, "pitrix_clusters", state="creating") == 2.0
    assert value(samples, "pitrix_clusters", state="deleted") is None
    assert value(samples, "pitrix_clusters_deleted_total") == 0.0


def test_deleted_clusters_are_counted_not_kept_in_the_state_gauge() -> None:
    metrics = Metrics()
    for revision in (1, 2):
        data = {"cluster": {"id": f"cl-{revision}", "state": "deleted", "updated": time.time()}}
        metrics.observe(Event("cluster", f"cl-{revision}", "ops", revision, data), time.time())
    samples, _ = parse(metrics.render([]).decode())
    assert value(samples, "pitrix_clusters_deleted_total") == 2.0
    assert value(samples, "pitrix_clusters", state="deleted") is None
    assert value(samples, "pitrix_clusters", state="active") == 0.0
