"""The web console in headless Chromium, in both auth modes: with tokens (a sign-in prompt, then the
list, a cluster's page and its actions; a refused token later brings the prompt back) and the
default token-less set-up (no Authorization header at all, so nothing is refused).

Each page state is saved as a screenshot under the test's tmp dir; assertion messages name it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer
from selenium.webdriver.common.by import By

from pitrix.api.app import create_app
from pitrix.api.auth import Tokens
from pitrix.api.ui import lifecycle_graph
from pitrix.runtime.keys import cluster_key, job_key, node_key, step_key
from pitrix.runtime.records import Cluster, Job, Node, StepRecord
from pitrix.runtime.service import RuntimeService
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store
from tests.ui_browser import Page

Client = TestClient[Any, Any]
# A small app with an endpoint whose port is a parameter (AppCenter's form) and two data nodes.
KV_APP = {
    "name": "kv",
    "version": "2.0",
    "env": {"port": {"type": "integer", "default": 2379}},
    "endpoints": {"client": {"port": "env.port", "protocol": "tcp"}},
    "roles": [{"name": "data", "count": 2, "image": "kv"}],
}
SMALL_APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


async def put_kv_cluster(store: Store, cid: str, owner: str = "alice") -> str:
    """A running two-node cluster's records as a finished create leaves them, with the create job
    and its steps (no VMs: the page reads records, the cloud is not its business)."""
    cluster = Cluster(
        id=cid,
        name="kv-main",
        owner=owner,
        runtime="dead",
        app=parse_spec(KV_APP),
        counts={"data": 2},
        state="active",
        job_id="j-create1",
        links={"upstream": "cl-other"},
    )
    for index in (1, 2):
        node = Node(
            node_id=f"data-{index}",
            role="data",
            index=index,
            name=f"{cid}-data-{index}",
            instance_id=f"i-d{index}",
            ip=f"127.100.9.{index}",
            status="ready",
        )
        await store.put(node_key(cid, node.node_id), node.dump())
    t0 = cluster.created
    job = Job(
        id="j-create1", cluster_id=cid, action="create", status="successful", created=t0, finished=t0 + 7
    )
    await store.put(job_key(cid, job.id), job.dump())
    for i, (name, took) in enumerate([("launch_instances", 4.5), ("publish_metadata", 1.25)]):
        step = StepRecord(name=name, status="done", started=t0 + i, finished=t0 + i + took)
        await store.put(step_key(cid, job.id, name), step.dump())
    await store.put(cluster_key(cid), cluster.dump())
    return cid


def cluster_page_checks(page: Page, kv: str, where: str) -> dict[str, Any]:
    """Open kv's page and read it: nodes, agents, endpoints, links, the one drawing, jobs, steps."""
    page.js("location.hash = arguments[0]", f"#/clusters/{kv}")
    page.until(
        "the node rows",
        lambda: page.rows(f"#cluster-{kv} table.nodes tr[data-node]", "data-node") == ["data-1", "data-2"],
    )
    page.until("the create job's steps", lambda: page.rows("table.steps tr[data-step]", "data-step"))
    page.until(
        "the lit state", lambda: page.js("return document.querySelector('#machine g.state.lit')") is not None
    )
    page.until("the kept events", lambda: page.js("return document.getElementById('events').dataset.history"))
    # a node's logs: these records have no metadata service, so the panel says why there are none
    # (by script: the node table is redrawn every few seconds, a held element would go stale)
    page.js("document.querySelector(arguments[0]).click()", f'#cluster-{kv} button.logs[data-node="data-1"]')
    page.until("the logs panel's answer", lambda: "metadata service" in page.text("#logs-status"))
    seen: dict[str, Any] = page.js(
        """
        const lit = document.querySelector('#machine g.state.lit');
        return {
          machines: document.querySelectorAll('svg.machine').length,
          states: document.querySelectorAll('#machine g.state').length,
          lit: lit && lit.dataset.state,
          node: document.querySelector(`#cluster-${arguments[0]} tr[data-node="data-1"]`).innerText,
          endpoint: document.querySelector('[data-endpoint="client"]').innerText,
          link: document.querySelector('[data-link="upstream"]').innerText,
          jobs: document.getElementById('jobs').innerText,
          steps: document.querySelector('table.steps').innerText,
          events: document.getElementById('events').innerText,
          logs: document.getElementById('node-logs').innerText,
        };
        """,
        kv,
    )
    seen["shot"] = page.shot(f"{where}-cluster")
    return seen


def with_tokens(base: str, kv: str, failed: str, shots: Path) -> dict[str, Any]:
    """In a thread (selenium blocks): sign in, list, filter, a cluster's page, actions, sign out."""
    page = Page(shots)
    seen: dict[str, Any] = {}
    try:
        page.driver.get(f"{base}/ui")
        page.until("the sign-in prompt", lambda: page.view() == "login")
        seen["prompt"] = (page.text("#status"), page.shot("tokens-login"))
        # the probe that found no token was refused (that is how it knows): the console shows it,
        # which also proves the 401 check below sees refusals
        seen["probe"] = page.unauthorized()
        page.type_into("#login-token", "not-a-token")
        page.click("#login-form button")
        page.until("the refusal", lambda: page.text("#login-error") == "unknown token")
        page.unauthorized()
        page.type_into("#login-token", ALICE)
        page.click("#login-form button")
        page.until(
            "the list",
            lambda: (
                page.view() == "list"
                and len(page.rows("#cluster-list tr[data-cluster]", "data-cluster")) == 2
            ),
        )
        seen["list"] = (
            set(page.rows("#cluster-list tr[data-cluster]", "data-cluster")),
            page.shot("tokens-list"),
        )
        seen["stored"] = page.js("return sessionStorage.getItem('pitrix-token')")
        page.type_into("#filter", "demo")
        page.until(
            "the filtered list",
            lambda: page.rows("#cluster-list tr[data-cluster]", "data-cluster") == [failed],
        )
        seen["filtered"] = page.shot("tokens-filtered")
        page.type_into("#filter", "")
        seen["page"] = cluster_page_checks(page, kv, "tokens")

        # actions: a refusal in the API's words, a scale that starts a job, a stop
        # typing goes on across a re-draw (the page re-draws on events and every 5 s)
        env_box = f"#cluster-{kv} form[data-action=env] textarea"
        page.type_into(env_box, '{"nope"')
        page.js("render(arguments[0])", kv)
        page.driver.switch_to.active_element.send_keys(': "1"}')
        typed = page.js("return document.querySelector(arguments[0]).value", env_box)
        assert typed == '{"nope": "1"}', f"typing lost across a re-draw: {typed!r}; see {page.shot('typing')}"
        page.click(f"#cluster-{kv} form[data-action=env] button")
        page.until(
            "the env refusal", lambda: "nope" in page.text(f"#cluster-{kv} form[data-action=env] .answer")
        )
        seen["env"] = page.text(f"#cluster-{kv} form[data-action=env] .answer")
        page.type_into(f"#cluster-{kv} form[data-action=scale] input[name=count]", "3")
        page.click(f"#cluster-{kv} form[data-action=scale] button")
        page.until(
            "the scale job", lambda: "job" in page.text(f"#cluster-{kv} form[data-action=scale] .answer")
        )
        seen["scale"] = (
            page.text(f"#cluster-{kv} form[data-action=scale] .answer"),
            page.shot("tokens-scaled"),
        )
        page.until("the scale job in the history", lambda: "scale_out" in page.text("#jobs"))
        page.until("live events with times", lambda: "scale_out" in page.text("#events"))
        seen["events"] = page.text("#events")

        # the failed create: retry, then delete only once its name is typed
        page.js("location.hash = arguments[0]", f"#/clusters/{failed}")
        page.until(
            "the failed cluster",
            lambda: (
                page.js(
                    "const l = document.querySelector('#machine g.state.lit'); return l && l.dataset.state"
                )
                == "failed"
            ),
        )
        page.until("the failed create's steps", lambda: "failed" in page.text("table.steps"))
        seen["failed"] = (page.text("#job-steps"), page.shot("tokens-failed"))
        page.click(f"#cluster-{failed} button[data-verb=retry]")
        page.until(
            "the retry job",
            lambda: "retry: job" in page.text(f"#cluster-{failed} form[data-action=lifecycle] .answer"),
        )
        delete = f"#cluster-{failed} form[data-action=delete]"
        page.type_into(f"{delete} input", "webpag")
        seen["delete_disabled"] = page.js(
            "return document.querySelector(arguments[0]).disabled", f"{delete} button"
        )
        page.until(
            "the retry to end",
            lambda: (
                page.js(
                    "const l = document.querySelector('#machine g.state.lit'); return l && l.dataset.state"
                )
                == "failed"
            ),
        )
        page.driver.find_element(By.CSS_SELECTOR, f"{delete} input").send_keys("e")
        page.click(f"{delete} button")
        page.until("the delete job", lambda: "delete: job" in page.text(f"{delete} .answer"))
        seen["deleted"] = page.shot("tokens-delete")
        seen["console"] = page.unauthorized()

        # a token refused later (revoked, pitrixd restarted with other tokens) brings the prompt back
        page.js("token = 'revoked-token'")
        page.js("location.hash = arguments[0]", f"#/clusters/{kv}")
        page.until("the prompt again", lambda: page.view() == "login")
        seen["again"] = (page.text("#login-error"), page.shot("tokens-relogin"))
        page.type_into("#login-token", ALICE)
        page.click("#login-form button")
        nodes = f"#cluster-{kv} table.nodes tr[data-node]"
        page.until("the page it was on", lambda: page.view() == "cluster" and page.rows(nodes, "data-node"))
        seen["back"] = page.shot("tokens-back")
        return seen
    finally:
        page.quit()


def without_tokens(base: str, kv: str, shots: Path) -> dict[str, Any]:
    page = Page(shots)
    seen: dict[str, Any] = {}
    try:
        page.driver.get(f"{base}/ui")
        page.until(
            "the list",
            lambda: page.view() == "list" and page.rows("#cluster-list tr[data-cluster]", "data-cluster"),
        )
        seen["list"] = (
            set(page.rows("#cluster-list tr[data-cluster]", "data-cluster")),
            page.shot("open-list"),
        )
        seen["status"] = page.text("#status")
        seen["page"] = cluster_page_checks(page, kv, "open")
        seen["console"] = page.unauthorized()
        # a token kept in the tab from a pitrixd that had tokens is dropped, not a prompt forever
        page.js("sessionStorage.setItem('pitrix-token', 'stale-token'); location.hash = '#/'")
        page.driver.refresh()
        page.until("the list again", lambda: page.js("return document.body.dataset.ready") == "1")
        seen["stale"] = (
            page.view(),
            page.js("return sessionStorage.getItem('pitrix-token')"),
            page.shot("open-stale"),
        )
        return seen
    finally:
        page.quit()


def check_cluster_page(seen: dict[str, Any]) -> None:
    shot = seen["shot"]
    graph = lifecycle_graph()
    assert (seen["machines"], seen["states"]) == (1, len(graph["states"])), f"drawn once; see {shot}"
    assert seen["lit"] == "active", shot
    # no agent report (no metadata service for these records): unknown, never blank or "down"
    assert seen["node"].split("\t") == [
        "data-1",
        "data",
        "i-d1",
        "127.100.9.1",
        "ready",
        "unknown",
        "unknown",
        "unknown",
        "logs",
    ], shot
    assert seen["endpoint"].split("\t") == ["client", "tcp", "127.100.9.1:2379, 127.100.9.2:2379"], shot
    assert "upstream → cl-other" in seen["link"], shot
    assert "j-create1\tcreate\tsuccessful" in seen["jobs"] and "7.0 s" in seen["jobs"], shot
    assert "launch_instances\tdone" in seen["steps"] and "4.5 s" in seen["steps"], shot
    assert "publish_metadata\tdone" in seen["steps"] and "1.3 s" in seen["steps"], shot
    # the cluster's kept events, with the times pitrixd saw them, before any live one came
    assert re.search(r"\d\d:\d\d:\d\d  cluster active", seen["events"]), shot
    assert "logs of data-1" in seen["logs"] and "has no running metadata service" in seen["logs"], shot


async def test_console_with_tokens_prompts_then_works(api: Client, store: Store, tmp_path: Path) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    kv = await put_kv_cluster(store, "cl-kv1")
    await put_kv_cluster(store, "cl-bobs", owner="bob")
    await api.post("/v1/clusters", json={"runtime": "dead", "app": SMALL_APP}, headers=bearer(BOB))
    created = await api.post(
        "/v1/clusters", json={"runtime": "dead", "app": SMALL_APP, "name": "webpage"}, headers=bearer(ALICE)
    )
    failed = (await created.json())["cluster"]["id"]
    base = str(api.make_url("")).rstrip("/")
    seen = await asyncio.to_thread(with_tokens, base, kv, failed, tmp_path)

    assert seen["prompt"][0] == "signed out", seen["prompt"]
    assert any("/v1/clusters" in line for line in seen["probe"]), seen["probe"]
    assert seen["list"][0] == {kv, failed}, f"alice's own clusters only; see {seen['list'][1]}"
    assert seen["stored"] == ALICE
    check_cluster_page(seen["page"])
    assert seen["env"].strip().startswith("env"), seen["env"]
    assert "scale: job j-" in seen["scale"][0], seen["scale"]
    assert re.search(r"^\d\d:\d\d:\d\d  job j-\w+ scale_out running$", seen["events"], re.M), seen["events"]
    assert "(create, failed)" in seen["failed"][0] and "\nmetadata\tfailed\t" in seen["failed"][0], seen[
        "failed"
    ]
    assert seen["delete_disabled"] is True
    assert seen["console"] == [], (
        f"a request was refused after sign-in: {seen['console']}; see {seen['deleted']}"
    )
    assert seen["again"][0] == "the token was refused; sign in again", seen["again"]
    jobs = (await (await api.get(f"/v1/clusters/{kv}/jobs", headers=bearer(ALICE))).json())["jobs"]
    assert {"create", "scale_out"} <= {j["action"] for j in jobs}
    scaled = next(j for j in jobs if j["action"] == "scale_out")
    assert scaled["args"]["role"] == "data", scaled


async def test_console_without_tokens_sends_no_authorization(
    service: RuntimeService, store: Store, tmp_path: Path
) -> None:
    """The default set-up: pitrixd on loopback with no token (every request the local admin)."""
    client: Client = TestClient(TestServer(create_app(service, Tokens.open()), host="127.0.0.1"))
    await client.start_server()
    try:
        kv = await put_kv_cluster(store, "cl-kv2")
        base = str(client.make_url("")).rstrip("/")
        seen = await asyncio.to_thread(without_tokens, base, kv, tmp_path)
    finally:
        await client.close()
    assert seen["status"] == "live"
    assert kv in seen["list"][0], seen["list"]
    check_cluster_page(seen["page"])
    assert seen["console"] == [], f"requests refused: {seen['console']}; see {seen['page']['shot']}"
    assert seen["stale"][:2] == ("list", None), seen["stale"]
