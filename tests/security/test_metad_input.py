"""Finding 9, metad's half: what an instance (or a stranger without a certificate) may send.

A deeply nested body is a 400 naming the body, not a 500 with a RecursionError traceback, both
where a certificate is required (``PUT /self/status/applied``) and where none is
(``POST /self/bootstrap``). A command result is stored only for a command the runtime posted to
that instance: otherwise any instance could fill a shared etcd with results nobody asked for.
"""

from __future__ import annotations

import json

import pytest

from .deployment import INSTANCE_PORT, Deployment, assert_4xx, attempt, no_verify

pytestmark = pytest.mark.e2e

# Deep enough for any recursive parser, small enough for the bootstrap body's 16 KiB cap.
NESTED = "[" * 8000 + "]" * 8000


def _metad_url(deployment: Deployment, label: str, path: str) -> str:
    holder = {"a1": "alice", "b1": "bob"}.get(label, "shared")
    return f"https://{deployment.metadata[holder].ip}:{INSTANCE_PORT}{path}"


@pytest.mark.parametrize("label", ["a1", "a2"])
async def test_nested_status_body_is_400(deployment: Deployment, label: str) -> None:
    node = deployment.nodes[label]
    for kind in ("applied", "health", "heartbeat"):
        outcome = await attempt(
            node.ip,
            "PUT",
            _metad_url(deployment, label, f"/self/status/{kind}"),
            tls=node.tls(),
            body=NESTED,
            headers={"Content-Type": "application/json"},
        )
        assert_4xx(outcome, f"nested JSON on /self/status/{kind}", ("Traceback", "RecursionError"))
        assert not isinstance(outcome, Exception) and outcome.status == 400, outcome


@pytest.mark.parametrize("label", ["a1", "a2"])
async def test_nested_bootstrap_body_without_a_certificate_is_400(deployment: Deployment, label: str) -> None:
    node = deployment.nodes[label]
    for body in (NESTED, '{"token": ' + NESTED + ', "csr": "x"}'):
        outcome = await attempt(
            node.ip,
            "POST",
            _metad_url(deployment, label, "/self/bootstrap"),
            tls=no_verify(),
            body=body,
            headers={"Content-Type": "application/json"},
        )
        assert_4xx(outcome, "nested JSON on /self/bootstrap", ("Traceback", "RecursionError"))
        assert not isinstance(outcome, Exception) and outcome.status == 400, outcome


@pytest.mark.parametrize("label", ["a1", "a2"])
async def test_a_result_for_a_command_nobody_posted_is_refused(deployment: Deployment, label: str) -> None:
    node = deployment.nodes[label]
    result = {"status": "successful", "exit_code": 0, "output_tail": "x" * 1024}
    for cmd_id in ("never-posted-1", "never-posted-2"):
        outcome = await attempt(
            node.ip,
            "PUT",
            _metad_url(deployment, label, f"/self/status/cmd/{cmd_id}"),
            tls=node.tls(),
            body=json.dumps(result),
            headers={"Content-Type": "application/json"},
        )
        assert_4xx(outcome, f"a result for command {cmd_id} nobody posted")


@pytest.mark.parametrize("label", ["a1", "a2"])
async def test_an_instance_still_reports_its_own_status(deployment: Deployment, label: str) -> None:
    """The control: a well-formed health report from the node itself is taken."""
    node = deployment.nodes[label]
    outcome = await attempt(
        node.ip,
        "PUT",
        _metad_url(deployment, label, "/self/status/health"),
        tls=node.tls(),
        body=json.dumps({"ok": True}),
        headers={"Content-Type": "application/json"},
    )
    assert not isinstance(outcome, Exception) and outcome.status == 200, outcome


@pytest.mark.parametrize(
    ("path", "method", "size"),
    [("/self/status/applied", "PUT", 300 * 1024), ("/self/bootstrap", "POST", 64 * 1024)],
)
async def test_an_oversized_body_to_metad_is_413(
    deployment: Deployment, path: str, method: str, size: int
) -> None:
    node = deployment.nodes["a2"]
    body = json.dumps({"revision": 1, "token": "t", "csr": "x", "pad": "x" * size})
    tls = node.tls() if path != "/self/bootstrap" else no_verify()
    outcome = await attempt(
        node.ip,
        method,
        _metad_url(deployment, "a2", path),
        tls=tls,
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert not isinstance(outcome, Exception) and outcome.status == 413, outcome


@pytest.mark.parametrize(
    "path",
    [
        "/clusters/{victim}",
        "/self/../clusters/{victim}",
        "/self/%2e%2e/clusters/{victim}",
        "/_pitrix/mapping",
    ],
)
async def test_a_shared_metad_shows_an_instance_nothing_of_another_owner(
    deployment: Deployment, path: str
) -> None:
    """On the metad alice and bob share, alice's certificate reaches nothing of bob's (held: kept)."""
    node, victim = deployment.nodes["a2"], deployment.nodes["b2"]
    url = _metad_url(deployment, "a2", path.format(victim=victim.cid))
    outcome = await attempt(node.ip, "GET", url, tls=node.tls(), headers={"Accept": "application/json"})
    assert_4xx(outcome, f"a2 GET {path}", (victim.ip, victim.instance_id))  # the cid is in the path it echoes
