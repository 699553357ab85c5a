"""Findings 5, 6 and part of 9: the admin API, attacked by a browser, by another owner, by input.

A browser can be made to send a cross-origin POST with ``Content-Type: text/plain`` (no preflight)
or to reach a loopback port under an attacker's host name (DNS rebinding); the API must refuse
both, above all in the token-less loopback set-up the README starts with, where nothing else
stands in the way. The catalog is per owner: what bob registers never changes what alice's
"create ``shop``" means, and bob does not see alice's apps.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pitrix.cli.demo import Child, _bin, sim_runtime, start_child, stop_child

from .deployment import Answer, Deployment, assert_4xx, child_env, demo_app

pytestmark = pytest.mark.e2e

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
async def open_pitrixd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Child]:
    """A pitrixd as the README's first steps start it: on loopback, no token configured."""
    workdir: Path = tmp_path_factory.mktemp("open-pitrixd")
    env = child_env()
    for name in [k for k in env if k.startswith("PITRIX_API__")]:
        env.pop(name)
    child = await start_child(
        "pitrixd",
        [_bin("pitrixd"), "--state-dir", str(workdir / "state"), "--api-listen", "127.0.0.1:0"],
        workdir / "pitrixd.log",
        env,
    )
    try:
        yield child
    finally:
        await stop_child(child)


async def _raw(
    url: str, method: str, path: str, *, headers: dict[str, str], data: str | None = None
) -> Answer:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        http.request(method, url + path, headers=headers, data=data) as response,
    ):
        return Answer(response.status, await response.text())


def _runtime(deployment: Deployment, name: str) -> dict[str, Any]:
    return {**sim_runtime(deployment.sim.ready, name), "metadata_size": 1}


async def _runtime_names(url: str, headers: dict[str, str]) -> list[str]:
    answer = await _raw(url, "GET", "/v1/runtimes", headers=headers)
    assert answer.status == 200, answer.text
    return [r["name"] for r in answer.json()["runtimes"]]


# -- finding 6: browser forgery ---------------------------------------------------------------------


async def test_token_less_api_refuses_a_cross_origin_text_plain_post(
    deployment: Deployment, open_pitrixd: Child
) -> None:
    url = str(open_pitrixd.ready["url"])
    body = json.dumps(_runtime(deployment, "forged"))
    forged = {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8"}
    assert_4xx(await _raw(url, "POST", "/v1/runtimes", headers=forged, data=body), "cross-origin text/plain")
    assert_4xx(
        await _raw(
            url,
            "POST",
            "/v1/runtimes",
            headers={"Origin": EVIL, "Content-Type": "application/json"},
            data=body,
        ),
        "cross-origin JSON",
    )
    assert_4xx(
        await _raw(url, "POST", "/v1/runtimes", headers={"Content-Type": "text/plain"}, data=body),
        "text/plain write (JSON-only writes)",
    )
    assert "forged" not in await _runtime_names(url, {})


async def test_token_less_api_refuses_a_foreign_host_name(open_pitrixd: Child) -> None:
    """DNS rebinding: the browser believes it talks to evil.example, the socket reaches pitrixd."""
    url = str(open_pitrixd.ready["url"])
    for path in ("/v1/runtimes", "/v1/clusters", "/ui"):
        assert_4xx(
            await _raw(url, "GET", path, headers={"Host": "evil.example"}), f"Host: evil.example {path}"
        )
    assert_4xx(
        await _raw(url, "GET", "/v1/runtimes", headers={"Host": "evil.example:80"}), "Host: evil.example:80"
    )


async def test_token_less_api_still_serves_its_own_client(
    deployment: Deployment, open_pitrixd: Child
) -> None:
    """The control: the CLI's own request (JSON, no Origin, Host as dialled) is accepted."""
    url = str(open_pitrixd.ready["url"])
    answer = await _raw(
        url,
        "POST",
        "/v1/runtimes",
        headers={"Content-Type": "application/json"},
        data=json.dumps(_runtime(deployment, "honest")),
    )
    assert answer.status == 201, answer.text
    assert "honest" in await _runtime_names(url, {})


async def test_tokened_api_refuses_forged_origin_and_host(deployment: Deployment) -> None:
    """The same checks hold with tokens: a page holding a token in its URL must not be able to use it."""
    body = _runtime(deployment, "forged-too")
    for extra in ({"Origin": EVIL}, {"Host": "evil.example"}):
        answer = await deployment.call("POST", "/v1/runtimes", "operator", body, headers=extra)
        assert_4xx(answer, f"operator's POST /v1/runtimes with {extra}")
    answer = await deployment.call(
        "POST", "/v1/runtimes", "operator", data=json.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert_4xx(answer, "operator's text/plain POST /v1/runtimes")
    runtimes = await deployment.ok("GET", "/v1/runtimes")
    assert "forged-too" not in [r["name"] for r in runtimes["runtimes"]]


# -- finding 9: access_token only where documented -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/clusters"), ("GET", "/v1/runtimes"), ("GET", "/v1/apps"), ("POST", "/v1/clusters")],
)
async def test_access_token_in_the_query_opens_no_ordinary_endpoint(
    deployment: Deployment, method: str, path: str
) -> None:
    """A token in a URL ends up in logs and Referer headers: only event streams and /ui take one."""
    token = deployment.tokens["alice"]
    answer = await deployment.call(
        method, f"{path}?access_token={token}", None, body={} if method == "POST" else None
    )
    # Refused as unauthenticated (401) or as a parameter this endpoint does not take (400): either
    # way nothing of alice's is served or done.
    assert answer.status in (400, 401), f"{method} {path}?access_token=: {answer.status} {answer.text[:300]}"
    assert "access_token" in answer.text or answer.status == 401, answer.text[:300]


async def test_access_token_in_the_query_opens_an_event_stream(deployment: Deployment) -> None:
    """The control: where it is documented, the query token works."""
    token = deployment.tokens["alice"]
    async with deployment.http.get(f"{deployment.url}/v1/events?access_token={token}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")


# -- finding 9: a 7.5 MB app spec -------------------------------------------------------------------------


async def test_an_oversized_app_spec_is_413(deployment: Deployment) -> None:
    spec = demo_app("huge", "1.0.0")
    spec["description"] = "x" * (7 * 1024 * 1024 + 512 * 1024)
    answer = await deployment.call("POST", "/v1/apps", "alice", spec)
    assert answer.status == 413, f"{answer.status}: {answer.text[:300]}"


@pytest.mark.parametrize("path", ["/v1/apps", "/v1/clusters", "/v1/runtimes"])
async def test_deeply_nested_json_is_400(deployment: Deployment, path: str) -> None:
    body = "[" * 100_000 + "]" * 100_000
    answer = await deployment.call(
        "POST", path, "operator", data=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status in (400, 413), f"{path}: {answer.status}: {answer.text[:300]}"


# -- finding 5: the catalog is per owner ------------------------------------------------------------------


async def test_another_owners_version_never_shadows_an_app(deployment: Deployment) -> None:
    """alice registered shop 1.0.0, then bob shop 1.0.1: alice's create of "shop" is her 1.0.0."""
    assert deployment.shop["bob"].status < 500, deployment.shop["bob"].text
    view = await deployment.ok("GET", f"/v1/clusters/{deployment.clusters['a1']}", "alice")
    assert view["app"] == {"name": "shop", "version": "1.0.0"}, view["app"]
    mine = await deployment.call("GET", "/v1/apps/shop", "alice")
    assert mine.status == 200, mine.text
    assert mine.json()["owner"] == "alice" and mine.json()["version"] == "1.0.0", mine.text[:300]
    assert "1.0.1" not in mine.json().get("versions", []), mine.json().get("versions")


async def test_an_owner_does_not_see_another_owners_apps(deployment: Deployment) -> None:
    listed = await deployment.ok("GET", "/v1/apps", "bob")
    assert all(app["owner"] != "alice" for app in listed["apps"]), listed
    answer = await deployment.call("GET", "/v1/apps/shop?version=1.0.0", "bob")
    assert answer.status == 404, f"bob reads alice's shop 1.0.0: {answer.status} {answer.text[:300]}"
    answer = await deployment.call("GET", "/v1/apps/shop", "bob")
    if answer.status == 200:
        assert answer.json()["owner"] != "alice" and "1.0.0" not in answer.json().get("versions", []), (
            answer.text
        )
    else:
        assert answer.status == 404, answer.text


# -- classes that held in the second probe: kept so they keep holding --------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/events", None),
        ("GET", "/jobs", None),
        ("POST", "/scale", {"role": "web", "count": 3}),
        ("POST", "/env", {"env": {"web": {"greeting": "pwned"}}}),
        ("DELETE", "", None),
    ],
)
async def test_another_owners_cluster_is_404(
    deployment: Deployment, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    answer = await deployment.call(method, f"/v1/clusters/{deployment.clusters['a1']}{suffix}", "bob", body)
    assert answer.status == 404, f"bob {method} a1{suffix}: {answer.status} {answer.text[:300]}"


async def test_an_owners_event_stream_carries_no_other_owners_cluster(deployment: Deployment) -> None:
    """bob's /v1/events snapshot (everything up to its ``ready`` event) names none of alice's clusters."""
    seen: list[str] = []
    async with deployment.http.get(
        f"{deployment.url}/v1/events", headers=deployment.headers("bob")
    ) as response:
        assert response.status == 200
        async for line in response.content:
            text = line.decode(errors="replace")
            if text.startswith("event: ready"):
                break
            seen.append(text)
    snapshot = "".join(seen)
    assert deployment.clusters["b1"] in snapshot, snapshot[:300]
    for label in ("a1", "a2"):
        assert deployment.clusters[label] not in snapshot, f"bob's event stream shows alice's {label}"


async def test_a_cluster_cannot_link_to_another_owners_cluster(deployment: Deployment) -> None:
    body = {
        "runtime": "sim",
        "app": demo_app(),
        "counts": {"web": 0, "lb": 0},
        "links": {"peer": deployment.clusters["b1"]},
    }
    answer = await deployment.call("POST", "/v1/clusters", "alice", body)
    if answer.status == 202:  # clean up what the hole let through, then fail
        cid = answer.json()["cluster"]["id"]
        await deployment.call("DELETE", f"/v1/clusters/{cid}", "operator")
    assert_4xx(answer, "alice links to bob's b1", (deployment.nodes["b1"].ip,))


async def test_an_owner_cannot_define_runtimes_or_act_for_another(deployment: Deployment) -> None:
    answer = await deployment.call("POST", "/v1/runtimes", "bob", _runtime(deployment, "bobs"))
    assert answer.status == 403, answer.text
    body = {"runtime": "sim", "app": demo_app(), "counts": {"web": 0, "lb": 0}, "owner": "alice"}
    assert_4xx(await deployment.call("POST", "/v1/clusters", "bob", body), "bob creates for alice")
