"""App metrics end to end on the simulator: a role's monitor run by each node's real pitrix-agent, its
items at pitrixd's /metrics labelled by cluster, role and node, the last hour per node at
``GET /v1/clusters/{cid}/metrics``, and the alert states (unhealthy, silent, last job failed) as series."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from e2e_cloud import Cloud
from etcd_http import eventually
from prometheus_client.parser import text_string_to_metric_families
from test_lifecycle import expect

from pitrix.api.app import create_app
from tests.ui_browser import Page

pytestmark = pytest.mark.e2e

# Each run counts itself in a file of the VM (a counter the app keeps) and reads the host's load.
MONITOR_CMD = (
    'n=$(cat var/ticks 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > var/ticks; '
    'echo "ticks $n"; echo "load1 $(cut -d" " -f1 /proc/loadavg)"; echo "chatter 1"'
)


def small_app() -> dict[str, Any]:
    return {
        "name": "metered",
        "version": "1.0.0",
        "roles": [
            {
                "name": "node",
                "count": 2,
                "image": "demo",
                "health_check": {"cmd": "test ! -e var/sick", "interval": 1, "unhealthy_threshold": 1},
                "monitor": {
                    "cmd": MONITOR_CMD,
                    "interval": 5,
                    "items": {
                        "ticks": {"kind": "counter", "description": "monitor runs on this node"},
                        "load1": {"unit": "load", "description": "the host's 1-minute load average"},
                    },
                },
                "custom_services": {"fail": {"cmd": "echo nothing to do; exit 3"}},
            }
        ],
    }


def series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


NODE_ROWS = """
return Object.fromEntries([...document.querySelectorAll('table.nodes tr[data-node]')]
  .map((row) => [row.dataset.node, row.innerText]));
"""


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Page]:
    """The web console in headless Chromium, on this test's cluster (screenshots in tmp_path)."""
    page = Page(tmp_path)
    try:
        yield page
    finally:
        page.quit()


def node_rows(
    page: Page, url: str | None, want: Callable[[dict[str, str]], bool], what: str
) -> dict[str, str]:
    """In a thread (selenium blocks): the console's node rows once ``want`` holds of them."""
    if url is not None:
        page.driver.get(url)
    rows: dict[str, str] = {}

    def ready() -> bool:
        rows.clear()
        rows.update(page.js(NODE_ROWS))
        return want(rows)

    page.until(what, ready)
    return rows


def node_logs(page: Page, node: str) -> dict[str, str]:
    """In a thread: the node's logs panel (its agent's log, read by the agent), then refreshed."""
    seen: dict[str, str] = {}
    # (by script: the node table is redrawn every few seconds, a held element would go stale)
    page.js("document.querySelector(arguments[0]).click()", f'table.nodes button.logs[data-node="{node}"]')
    page.until("the node's log in the panel", lambda: page.text("#logs-text").strip())
    seen["title"] = page.text("#node-logs h3")
    seen["first"] = page.text("#logs-text")
    seen["loaded"] = page.js("return document.getElementById('node-logs').dataset.loaded")
    page.js("document.getElementById('logs-refresh').click()")
    page.until(
        "the refreshed log",
        lambda: page.js("return document.getElementById('node-logs').dataset.loaded") != seen["loaded"],
    )
    seen["refreshed"] = page.js("return document.getElementById('node-logs').dataset.loaded")
    seen["again"] = page.text("#logs-text")
    seen["shot"] = page.shot("console-node-logs")
    return seen


async def test_monitor_items_alert_states_and_the_last_hour_per_node(
    cloud: Cloud, tmp_path: Path, console: Page
) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=small_app())
    cid = cluster.id
    async with TestClient(TestServer(create_app(service), host="127.0.0.1")) as api:
        await expect(service, cid, "active")
        nodes = {n.node_id: n for n in await service.nodes(cid)}

        async def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
            response = await api.get("/metrics")
            assert response.status == 200
            return series(await response.text())

        def mine(found: dict[str, list[tuple[dict[str, str], float]]], name: str) -> dict[str, float]:
            return {
                f"{labels['node']}:{labels.get('item', '')}": value
                for labels, value in found.get(name, [])
                if labels["cluster"] == cid
            }

        async def both_reported() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            found = await scrape()
            counters = mine(found, "pitrix_app_counter_total")
            return found if set(counters) == {"node-1:ticks", "node-2:ticks"} else None

        found = await eventually("both nodes' ticks at /metrics", both_reported, 60)
        counter = next(labels for labels, _ in found["pitrix_app_counter_total"] if labels["cluster"] == cid)
        assert counter == {
            "cluster": cid,
            "app": "metered",
            "role": "node",
            "node": counter["node"],
            "item": "ticks",
            "unit": "",
        }
        # The console (token-less, as this API is) shows what the agents report: alive, healthy, a revision.
        healthy = re.compile(r"\thealthy\talive\tr\d+\tlogs$")
        url = f"{str(api.make_url('')).rstrip('/')}/ui#/clusters/{cid}"
        rows = await asyncio.to_thread(
            node_rows,
            console,
            url,
            lambda r: len(r) == 2 and all(healthy.search(t) for t in r.values()),
            "both nodes alive, healthy and at a revision",
        )
        shot = console.shot("console-healthy")
        assert sorted(rows) == ["node-1", "node-2"], (rows, shot)
        logs = await asyncio.to_thread(node_logs, console, "node-2")
        assert "node-2 (" in logs["title"] and '"command started"' in logs["first"], (logs, logs["shot"])
        assert logs["refreshed"] != logs["loaded"] and '"logs-' in logs["again"], (logs, logs["shot"])
        gauges = mine(found, "pitrix_app_gauge")
        assert set(gauges) == {"node-1:load1", "node-2:load1"}  # "chatter" is not declared: ignored
        gauge = next(labels for labels, _ in found["pitrix_app_gauge"] if labels["cluster"] == cid)
        assert gauge["unit"] == "load"
        assert mine(found, "pitrix_node_silent") == {"node-1:": 0.0, "node-2:": 0.0}
        assert mine(found, "pitrix_node_unhealthy") == {"node-1:": 0.0, "node-2:": 0.0}
        assert [v for labels, v in found["pitrix_cluster_last_job_failed"] if labels["cluster"] == cid] == [
            0.0
        ]

        # The last hour per node: each run a sample, the counter growing run after run.
        async def two_runs() -> dict[str, Any] | None:
            response = await api.get(f"/v1/clusters/{cid}/metrics", params={"since": "0"})
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            ticks = {n["node_id"]: n["samples"]["ticks"] for n in body["nodes"]}
            return body if all(len(t) >= 2 for t in ticks.values()) and len(ticks) == 2 else None

        history = await eventually("two runs per node in the history", two_runs, 60)
        assert history["roles"]["node"]["items"]["ticks"]["kind"] == "counter"
        for node in history["nodes"]:
            values = [v for _, v in node["samples"]["ticks"]]
            times = [t for t, _ in node["samples"]["ticks"]]
            assert values == sorted(values) and values[0] < values[-1], node
            assert times == sorted(times) and times[0] >= history["since"], node
            assert node["samples"]["load1"], node
        later = await api.get(f"/v1/clusters/{cid}/metrics", params={"since": str(history["now"] + 3600)})
        assert all(not s for n in (await later.json())["nodes"] for s in n["samples"].values())
        bad = await api.get(f"/v1/clusters/{cid}/metrics", params={"since": "yesterday"})
        assert bad.status == 400 and "since" in (await bad.json())["error"]["message"]

        # Alert states: node-2's check fails, node-1's VM dies, a custom service fails.
        (cloud.workdir / "sim" / "vms" / nodes["node-2"].instance_id / "root" / "var" / "sick").touch()
        cloud.crash_vm(nodes["node-1"].instance_id)

        async def alerting() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            found = await scrape()
            down = mine(found, "pitrix_node_silent").get("node-1:") == 1.0
            sick = mine(found, "pitrix_node_unhealthy").get("node-2:") == 1.0
            return found if down and sick else None

        found = await eventually("node-1 silent and node-2 unhealthy", alerting, 60)
        rows = await asyncio.to_thread(
            node_rows,
            console,
            None,  # the open page asks again on its own
            lambda r: "\tsilent\t" in r.get("node-1", "") and "\tunhealthy" in r.get("node-2", ""),
            "node-1 silent and node-2 unhealthy on the console",
        )
        shot = console.shot("console-alerting")
        assert "\talive\t" in rows["node-2"], (rows, shot)
        assert console.unauthorized() == [], shot
        assert mine(found, "pitrix_node_silent")["node-2:"] == 0.0
        assert [v for labels, v in found["pitrix_nodes_silent"]] == [1.0]  # the sum over all clusters
        await service.act(cid, "service", {"name": "fail", "nodes": ["node-2"]})
        await expect(service, cid, "active")
        found = await scrape()
        assert [v for labels, v in found["pitrix_cluster_last_job_failed"] if labels["cluster"] == cid] == [
            1.0
        ]
        assert [v for labels, v in found["pitrix_cluster_recovery_halted"] if labels["cluster"] == cid] == [
            0.0
        ]
