"""The web page's custom services in headless Chromium: a form per service that runs it through the
API (a refusal shown naming the field), and the last service job's result on each node."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, DEAD_CLOUD, bearer
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_custom_services_api import active_cluster

from pitrix.runtime.keys import cluster_key, job_key
from pitrix.runtime.records import Cluster, Job
from pitrix.store import Store
from tests.ui_browser import browser

Client = TestClient[Any, Any]
CARD = """
const card = document.getElementById(`cluster-${arguments[0]}`);
return card ? card.innerText : "";
"""


def card_text(driver: webdriver.Chrome, cid: str) -> str:
    text: str = driver.execute_script(CARD, cid)
    return text


def use_page(url: str, cid: str) -> dict[str, str]:
    """In a thread (selenium blocks): read the results, submit a bad then a good request."""
    driver = browser()
    seen: dict[str, str] = {}
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 180, poll_frequency=0.2)  # generous: 2 cores, many test runs
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "body[data-ready='1']"))
        wait.until(lambda d: "boom at 3am" in card_text(d, cid))
        seen["results"] = card_text(driver, cid)
        form = f"#cluster-{cid} form[data-service='backup']"
        level = driver.find_element(By.CSS_SELECTOR, f"{form} input[name='level']")
        level.send_keys("10")
        driver.find_element(By.CSS_SELECTOR, f"{form} button").click()
        wait.until(lambda d: "above the maximum" in card_text(d, cid))
        seen["refused"] = driver.find_element(By.CSS_SELECTOR, f"{form} .answer").text
        level.clear()
        level.send_keys("3")
        driver.find_element(By.CSS_SELECTOR, f"{form} input[name='key']").send_keys("pw-typed")
        driver.find_element(By.CSS_SELECTOR, f"{form} input[name='nodes']").send_keys("data-2")
        driver.find_element(By.CSS_SELECTOR, f"{form} button").click()
        wait.until(lambda d: "started" in d.find_element(By.CSS_SELECTOR, f"{form} .answer").text)
        seen["started"] = driver.find_element(By.CSS_SELECTOR, f"{form} .answer").text
        return seen
    finally:
        driver.quit()


async def test_the_page_runs_a_custom_service_and_shows_each_node_s_result(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    cid = await active_cluster(store)
    # as a service job that ended would have left them: its results on the job, the cluster active
    kv = await store.get(cluster_key(cid))
    assert kv is not None
    cluster = Cluster.model_validate_json(kv.value).model_copy(update={"job_id": "j-done1"})
    results = {
        "data-1": {"instance_id": "i-d1", "status": "failed", "exit_code": 3, "output_tail": "boom at 3am\n"}
    }
    done = Job(id="j-done1", cluster_id=cid, action="service", status="failed", error="x", results=results)
    await store.put(job_key(cid, done.id), done.dump())
    await store.put(cluster_key(cid), cluster.dump())

    seen = await asyncio.to_thread(
        use_page, str(api.make_url(f"/ui?access_token={ALICE}")) + f"#/clusters/{cid}", cid
    )
    assert "service failed" in seen["results"] and "data-1\tfailed\t3\t" in seen["results"], seen["results"]
    assert "custom services\nbackup Run" in seen["results"]
    assert seen["refused"].strip().startswith("params.level: 10 is above the maximum 9")
    assert seen["started"].strip().startswith("job j-")
    jobs = (await (await api.get(f"/v1/clusters/{cid}/jobs", headers=bearer(ALICE))).json())["jobs"]
    asked = next(j for j in jobs if j["id"] != "j-done1")
    assert asked["args"] == {
        "name": "backup",
        "params": {"data": {"level": "3", "key": "******"}},
        "nodes": ["data-2"],
    }
