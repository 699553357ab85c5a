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


# The page re-draws a cluster on every event, so elements found one call earlier may be gone:
# each read is one script that looks and reads in the page's own turn, never a held element.
LIT_STATE = """
const lit = document.querySelector(`#cluster-${arguments[0]} g.state.lit`);
return lit ? lit.dataset.state : null;
"""
SNAPSHOT = """
const card = document.getElementById(`cluster-${arguments[0]}`);
return {
  drawn: [...card.querySelectorAll("g.state")].map((g) => g.dataset.state),
  edges: card.querySelectorAll("line").length,
  theirs: document.getElementById(`cluster-${arguments[1]}`) !== null,
  text: card.innerText,
  status: document.getElementById("status").innerText,
};
"""


def lit_state(driver: webdriver.Chrome, cid: str) -> str | None:
    state: str | None = driver.execute_script(LIT_STATE, cid)
    return state


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
            status = driver.execute_script("return document.getElementById('status').innerText")
            raise AssertionError(
                f"the page never lit 'failed'; saw {states[-5:]}, status {status!r}"
            ) from None
        seen: dict[str, Any] = driver.execute_script(SNAPSHOT, mine, theirs)
        seen["drawn"] = set(seen["drawn"])
        return seen
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
    try:
        seen = await asyncio.to_thread(watch_page, url, mine, (await theirs.json())["cluster"]["id"])
    except AssertionError as exc:
        # Tell a page that missed the change from a cluster that never got there.
        shown = await (await api.get(f"/v1/clusters/{mine}", headers=bearer(ALICE))).json()
        job = shown.get("job") or {}
        raise AssertionError(
            f"{exc}; the API has the cluster {shown.get('state')!r}, its job {job.get('status')!r}"
        ) from None

    graph = lifecycle_graph()
    assert seen["drawn"] == {s["name"] for s in graph["states"]}
    assert seen["edges"] == sum(1 for e in graph["edges"] if e["from"] != e["to"])
    assert seen["theirs"] is False  # bob's cluster is not alice's to see
    assert "webpage" in seen["text"] and "metadata" in seen["text"]
    assert seen["status"] == "live"
