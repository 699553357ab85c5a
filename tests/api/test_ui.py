"""The web page in headless Chromium: a cluster appears live, its state lit in the machine drawn."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, APP, BOB, DEAD_CLOUD, bearer
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pitrix.api.ui import lifecycle_graph

Client = TestClient[Any, Any]
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(driver_path))


def lit_state(driver: webdriver.Chrome, cid: str) -> str | None:
    found = driver.find_elements(By.CSS_SELECTOR, f"#cluster-{cid} g.state.lit")
    return found[0].get_attribute("data-state") if found else None


def watch_page(url: str, mine: str, theirs: str) -> dict[str, Any]:
    """In a thread (selenium blocks): open the page, wait for the cluster to be lit failed."""
    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 180, poll_frequency=0.2)  # generous: 2 cores, many test runs
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "body[data-ready='1']"))
        states = []
        try:
            wait.until(lambda d: states.append(lit_state(d, mine)) or states[-1] == "failed")
        except TimeoutException:
            status = driver.find_element(By.ID, "status").text
            raise AssertionError(
                f"the page never lit 'failed'; saw {states[-5:]}, status {status!r}"
            ) from None
        drawn = {
            g.get_attribute("data-state")
            for g in driver.find_elements(By.CSS_SELECTOR, f"#cluster-{mine} g.state")
        }
        return {
            "drawn": drawn,
            "edges": len(driver.find_elements(By.CSS_SELECTOR, f"#cluster-{mine} line")),
            "theirs": driver.find_elements(By.ID, f"cluster-{theirs}"),
            "text": driver.find_element(By.ID, f"cluster-{mine}").text,
            "status": driver.find_element(By.ID, "status").text,
        }
    finally:
        driver.quit()


async def test_page_shows_own_clusters_live_with_the_state_lit(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    page = await api.get("/ui")
    assert page.status == 200 and page.content_type == "text/html"

    theirs = await api.post("/v1/clusters", json={"runtime": "dead", "app": APP}, headers=bearer(BOB))
    created = await api.post(
        "/v1/clusters", json={"runtime": "dead", "app": APP, "name": "webpage"}, headers=bearer(ALICE)
    )
    mine = (await created.json())["cluster"]["id"]
    url = str(api.make_url(f"/ui?access_token={ALICE}"))
    seen = await asyncio.to_thread(watch_page, url, mine, (await theirs.json())["cluster"]["id"])

    graph = lifecycle_graph()
    assert seen["drawn"] == {s["name"] for s in graph["states"]}
    assert seen["edges"] == sum(1 for e in graph["edges"] if e["from"] != e["to"])
    assert seen["theirs"] == []  # bob's cluster is not alice's to see
    assert "webpage" in seen["text"] and "metadata" in seen["text"]
    assert seen["status"] == "live"
