"""App metrics in pitrixd without VMs: the per-node ring, the history API (scoped to the owner, ``since``
checked), the alert series read from cluster records, and the web page's plot of the last hour."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer, put_data_cluster
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pitrix.api.app import APP_METRICS
from pitrix.api.app_metrics import AppMetricsFeed, Ring
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd
from tests.ui_browser import browser

Client = TestClient[Any, Any]
APP = {
    "name": "kv",
    "version": "1.0",
    "roles": [
        {
            "name": "data",
            "count": 2,
            "image": "kv",
            "monitor": {
                "cmd": "opt/kv/stats",
                "interval": 5,
                "items": {
                    "keys": {"description": "keys held"},
                    "writes": {"kind": "counter", "unit": "ops"},
                },
            },
        }
    ],
}


def test_the_ring_keeps_the_newest_samples_in_order() -> None:
    ring = Ring(3)
    for t in range(5):
        ring.add(float(t), {"a": t * 10.0} if t != 3 else {"b": 1.0})
    assert list(ring.times) and len(ring.times) == 3  # bounded
    assert ring.since(0) == {"a": [[2.0, 20.0], [4.0, 40.0]], "b": [[3.0, 1.0]]}
    assert ring.since(3.5) == {"a": [[4.0, 40.0]], "b": []}
    assert all(math.isnan(v) or v >= 0 for v in ring.values["b"])


async def metered_cluster(store: Store, **changes: Any) -> str:
    return await put_data_cluster(store, "cl-mon1", APP, node_status="registered", **changes)


async def feed_reports(api: Client, cid: str, runs: int) -> None:
    """Reports as the metad watch hands them to the feed (no metadata cluster on the dead cloud)."""
    feed = api.server.app[APP_METRICS]
    await feed.refresh(await (await _service(api)).list_clusters())
    for run in range(runs):
        for index in (1, 2):
            values = {"keys": 100.0 * index + run, "writes": 10.0 * run}
            assert feed.take_report(cid, f"i-d{index}", {"values": values, "error": None, "time": f"t{run}"})
    # the same report again (a watch's replay) is not a new sample
    assert not feed.take_report(cid, "i-d1", {"values": {"keys": 0}, "error": None, "time": f"t{runs - 1}"})


async def _service(api: Client) -> Any:
    from pitrix.api.app import SERVICE

    return api.server.app[SERVICE]


async def test_history_is_the_owner_s_and_since_is_checked(api: Client, store: Store) -> None:
    cid = await metered_cluster(store)
    await feed_reports(api, cid, 3)
    response = await api.get(f"/v1/clusters/{cid}/metrics", headers=bearer(ALICE))
    assert response.status == 200
    body = await response.json()
    assert body["roles"]["data"] == {
        "interval": 5,
        "items": {
            "keys": {"unit": "", "kind": "gauge", "description": "keys held"},
            "writes": {"unit": "ops", "kind": "counter", "description": ""},
        },
    }
    samples = {n["node_id"]: n["samples"] for n in body["nodes"]}
    assert [v for _, v in samples["data-2"]["keys"]] == [200.0, 201.0, 202.0]
    assert [v for _, v in samples["data-1"]["writes"]] == [0.0, 10.0, 20.0]
    assert body["watching"] is False  # the dead cloud has no metadata service to follow
    later = await api.get(f"/v1/clusters/{cid}/metrics?since={body['now'] + 1}", headers=bearer(ALICE))
    assert all(not s for n in (await later.json())["nodes"] for s in n["samples"].values())
    assert (await api.get(f"/v1/clusters/{cid}/metrics", headers=bearer(BOB))).status == 404
    for since in ("soon", "nan", "inf"):
        bad = await api.get(f"/v1/clusters/{cid}/metrics?since={since}", headers=bearer(ALICE))
        assert bad.status == 400, since
        assert (await bad.json())["error"]["field"] == "since"


async def test_alert_series_come_from_the_cluster_records(api: Client, store: Store) -> None:
    cid = await metered_cluster(store, last_error="scale_out failed: boom", recovery_halted="3 of 3 silent")
    text = await (await api.get("/metrics", headers=bearer(ADMIN))).text()
    found = {
        (s.name, s.labels.get("cluster")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("pitrix_cluster_last_job_failed", cid)] == 1.0
    assert found[("pitrix_cluster_recovery_halted", cid)] == 1.0
    # Its metadata service cannot be followed: nothing is said of its nodes rather than "silent".
    assert ("pitrix_node_silent", cid) not in found


async def test_a_cluster_is_followed_once_its_create_ends(api: Client, store: Store) -> None:
    """No metad watch while a cluster is being created: every replica follows every cluster, and
    a burst of creates opened replicas x clusters watches on the owner's metad as its agents
    bootstrapped there (the replicas bench's collapse); the feed starts at the state's change."""
    cid = await metered_cluster(store, state="creating")
    feed = api.server.app[APP_METRICS]
    report = {"values": {"keys": 1.0}, "error": None, "time": "t0"}
    await feed.refresh(await (await _service(api)).list_clusters())
    assert not feed.take_report(cid, "i-d1", report)  # not followed
    await metered_cluster(store, state="active")
    await feed.refresh(await (await _service(api)).list_clusters())
    assert feed.take_report(cid, "i-d1", report)


def plotted(url: str, cid: str) -> dict[str, Any]:
    """In a thread (selenium blocks): the page's chart of each item, a line per node."""
    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 180, poll_frequency=0.2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#cluster-{cid} svg.metric polyline"))
        seen: dict[str, Any] = driver.execute_script(
            """
            const box = document.querySelector(`#cluster-${arguments[0]} .metrics`);
            return {
              lines: [...box.querySelectorAll("svg.metric polyline")].map((p) =>
                [p.closest("svg").dataset.item, p.dataset.node, Number(p.dataset.count),
                 p.getAttribute("points").split(" ").length]),
              captions: [...box.querySelectorAll("figcaption")].map((c) => c.textContent),
            };
            """,
            cid,
        )
        return seen
    finally:
        driver.quit()


async def test_the_page_plots_the_last_hour_per_node(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    cid = await metered_cluster(store)
    await feed_reports(api, cid, 4)
    seen = await asyncio.to_thread(
        plotted, str(api.make_url(f"/ui?access_token={ALICE}")) + f"#/clusters/{cid}", cid
    )
    assert sorted(seen["lines"]) == [
        ["keys", "data-1", 4, 4],
        ["keys", "data-2", 4, 4],
        ["writes", "data-1", 4, 4],
        ["writes", "data-2", 4, 4],
    ]
    assert seen["captions"] == [
        "data · keys · data-1 103 · data-2 203",
        "data · writes (ops), counter · data-1 30 · data-2 30",
    ]


async def test_the_feed_starts_though_etcd_does_not_answer_its_first_read(tmp_path: Path) -> None:
    """A replica restarted while its etcd is slow (a member killed, a loaded host) must still
    start: the feed's first read of every cluster is left to its sync task (pitrixd exited 1)."""
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    await etcd.start()
    store = await Store.connect([etcd.client_url], prefix="/feed", tls=etcd.client_tls, timeout=1.0)
    feed = AppMetricsFeed(RuntimeService(store, sealer=Sealer.generate()))
    try:
        await metered_cluster(store)
        await etcd.stop()
        await feed.start()
        assert feed._unread and not feed._feeds
    finally:
        await feed.close()
        await store.close()
        await etcd.stop()
