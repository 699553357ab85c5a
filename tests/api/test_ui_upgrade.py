"""upgrade through the admin API and the web page (headless Chromium), on a dead cloud: the dry
run's answer, refusals naming the field, and the page's form (the app's versions, Preview, Upgrade)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer, error_of
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_custom_services_api import APP, active_cluster
from test_ui_custom_services import card_text

from pitrix.store import Store
from tests.ui_browser import browser

Client = TestClient[Any, Any]


def next_version() -> dict[str, Any]:
    spec = copy.deepcopy(APP)
    spec["version"] = "2.0"
    spec["roles"][0]["env"] = {"cache-mb": 64}
    spec["upgrade"] = {"from_versions": ["0.*"], "canary": 1, "max_in_flight": 1}
    return spec


def use_page(url: str, cid: str) -> dict[str, str]:
    """In a thread (selenium blocks): preview, then start the upgrade from the page's form."""
    driver = browser()
    seen: dict[str, str] = {}
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 180, poll_frequency=0.2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "body[data-ready='1']"))
        form = f"#cluster-{cid} form[data-upgrade='{cid}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{form} option[value='2.0']"))
        seen["options"] = ",".join(
            o.get_attribute("value") or "" for o in driver.find_elements(By.CSS_SELECTOR, f"{form} option")
        )
        driver.find_element(By.CSS_SELECTOR, f"{form} button[data-preview]").click()
        wait.until(lambda d: "batch" in card_text(d, cid) or "canary" in card_text(d, cid))
        seen["preview"] = driver.find_element(By.CSS_SELECTOR, f"{form} .answer").text
        driver.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()
        wait.until(lambda d: "started" in d.find_element(By.CSS_SELECTOR, f"{form} .answer").text)
        seen["started"] = driver.find_element(By.CSS_SELECTOR, f"{form} .answer").text
        return seen
    finally:
        driver.quit()


async def test_the_dry_run_refusals_and_the_page_s_upgrade_form(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    for spec in (APP, next_version()):
        assert (await api.post("/v1/apps", json=spec, headers=bearer(ALICE))).status == 201
    cid = await active_cluster(store)
    url = f"/v1/clusters/{cid}/upgrade"

    preview = await (await api.get(url, params={"version": "2.0"}, headers=bearer(ALICE))).json()
    assert preview["params"]["added"] == {"env.data.cache-mb": "64"}
    assert [b["nodes"] for b in preview["batches"]] == [["data-1"], ["data-2"]]
    error = await error_of(await api.get(url, headers=bearer(ALICE)), 400)
    assert error["field"] == "version"
    error = await error_of(await api.get(url, params={"version": "7"}, headers=bearer(ALICE)), 400)
    assert error["field"] == "version" and "not registered" in error["message"]
    assert (await api.get(url, params={"version": "2.0"}, headers=bearer(BOB))).status == 404
    error = await error_of(
        await api.post(url, json={"version": "2.0", "env": {"data": {"x": 1}}}, headers=bearer(ALICE)), 400
    )
    assert error["field"] == "env.data.x"

    seen = await asyncio.to_thread(
        use_page, str(api.make_url(f"/ui?access_token={ALICE}")) + f"#/clusters/{cid}", cid
    )
    assert seen["options"] == "2.0"  # the app's versions but the cluster's own
    assert "+ env.data.cache-mb = 64" in seen["preview"] and "data:canary data-1" in seen["preview"]
    assert seen["started"].startswith("job j-")
    jobs = (await (await api.get(f"/v1/clusters/{cid}/jobs", headers=bearer(ALICE))).json())["jobs"]
    assert [j["action"] for j in jobs] == ["upgrade"] and jobs[0]["args"]["version"] == "2.0"
