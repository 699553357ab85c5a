"""Finding 1 (and its neighbours): the metadata VM's etcd and metad's other doors, from an instance.

The attacker is code on one of alice's nodes: it owns that node's address and everything in its
VM root, the agent's certificate included. It must not reach the etcd behind metad (client port
2379, peer port 2380) in any way: not in plain HTTP, not over TLS without a certificate, not with
the agent's own certificate (issued for metad, not for etcd). Nor may it use metad's management
port, or a forwarded-for header, to be someone else.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from .deployment import (
    AGENT_CERT,
    AGENT_KEY,
    INSTANCE_PORT,
    MANAGE_PORT,
    Deployment,
    MetadataVM,
    Node,
    Outcome,
    assert_refused,
    attempt,
    no_verify,
)

pytestmark = pytest.mark.e2e


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class Target:
    """Whose metadata cluster is attacked, from which of alice's nodes, hunting which cluster."""

    metadata: MetadataVM
    attacker: Node
    victim: Node


def target(d: Deployment, placement: str) -> Target:
    if placement == "per-owner":  # bob's own metadata cluster, attacked from alice's a1
        return Target(d.metadata["bob"], d.nodes["a1"], d.nodes["b1"])
    return Target(d.metadata["shared"], d.nodes["a2"], d.nodes["b2"])


PLACEMENTS = ["per-owner", "shared"]
MODES = ["plain", "tls-without-certificate", "tls-with-the-instance-certificate"]


async def _etcd(t: Target, port: int, mode: str, path: str, body: Mapping[str, object] | None) -> Outcome:
    # The client checks nothing of the server: what is probed is whether the server checks the client.
    tls: ssl.SSLContext | bool = False
    if mode == "tls-without-certificate":
        tls = no_verify()
    elif mode == "tls-with-the-instance-certificate":
        tls = no_verify_with(t.attacker)
    scheme = "http" if tls is False else "https"
    method = "POST" if body is not None else "GET"
    return await attempt(
        t.attacker.ip,
        method,
        f"{scheme}://{t.metadata.ip}:{port}{path}",
        tls=tls,
        body=json.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json"},
        timeout=5.0,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_metadata_etcd_client_port_reads_nothing(
    deployment: Deployment, placement: str, mode: str
) -> None:
    t = target(deployment, placement)
    prefix = f"/clusters/{t.victim.cid}/"
    for port in t.metadata.etcd_ports("client"):
        body = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        outcome = await _etcd(t, port, mode, "/v3/kv/range", body)
        assert_refused(
            outcome,
            f"{mode} range of {prefix} on {t.metadata.ip}:{port}",
            (t.victim.cid, deployment.password),
        )
        everything = {"key": _b64("\0"), "range_end": _b64("\0"), "keys_only": True}
        outcome = await _etcd(t, port, mode, "/v3/kv/range", everything)
        assert_refused(outcome, f"{mode} range of every key on {t.metadata.ip}:{port}", (t.victim.cid,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_metadata_etcd_takes_no_write(deployment: Deployment, placement: str, mode: str) -> None:
    """A command key under another owner's cluster would be run by its agent: code execution."""
    t = target(deployment, placement)
    key = f"/clusters/{t.victim.cid}/cmd/{t.victim.instance_id}/security-probe"
    for port in t.metadata.etcd_ports("client"):
        body = {"key": _b64(key), "value": _b64(f"written from {t.attacker.ip}")}
        outcome = await _etcd(t, port, mode, "/v3/kv/put", body)
        assert_refused(outcome, f"{mode} put of {key} on {t.metadata.ip}:{port}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_metadata_etcd_peer_port_answers_no_stranger(
    deployment: Deployment, placement: str, mode: str
) -> None:
    """The peer port (members, raft) speaks TLS with peer certificates only."""
    t = target(deployment, placement)
    for port in t.metadata.etcd_ports("peer"):
        for path in ("/members", "/version"):
            outcome = await _etcd(t, port, mode, path, None)
            assert_refused(outcome, f"{mode} GET {path} on {t.metadata.ip}:{port}")


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_metad_management_port_refuses_an_instance(deployment: Deployment, placement: str) -> None:
    """Only the runtime's management certificate opens port 9611; an agent's certificate does not."""
    t = target(deployment, placement)
    path = f"/v1/data/clusters/{t.victim.cid}"
    for name, tls in (("agent certificate", no_verify_with(t.attacker)), ("no certificate", no_verify())):
        outcome = await attempt(t.attacker.ip, "GET", f"https://{t.metadata.ip}:{MANAGE_PORT}{path}", tls=tls)
        assert_refused(outcome, f"management GET {path} with {name}", (deployment.password, t.victim.ip))
        mapping = f"/v1/mapping/{t.victim.instance_id}"
        outcome = await attempt(
            t.attacker.ip,
            "PUT",
            f"https://{t.metadata.ip}:{MANAGE_PORT}{mapping}",
            tls=tls,
            body=json.dumps({"cluster_id": t.victim.cid, "role": "web", "ip": t.attacker.ip}),
            headers={"Content-Type": "application/json"},
        )
        assert_refused(outcome, f"management PUT {mapping} with {name}")


async def test_forwarded_for_does_not_change_who_an_instance_is(deployment: Deployment) -> None:
    """With mutual TLS the certificate says who calls: X-Forwarded-For naming bob's node is ignored."""
    t = target(deployment, "shared")
    url = f"https://{t.metadata.ip}:{INSTANCE_PORT}/self"
    headers = {"Accept": "application/json", "X-Forwarded-For": t.victim.ip, "X-Real-IP": t.victim.ip}
    outcome = await attempt(t.attacker.ip, "GET", url, tls=t.attacker.tls(), headers=headers)
    assert not isinstance(outcome, Exception), outcome
    assert outcome.status == 200, outcome.text[:400]
    assert t.attacker.cid in outcome.text and t.victim.cid not in outcome.text, outcome.text[:400]


async def test_an_instance_certificate_opens_no_other_owners_metad(deployment: Deployment) -> None:
    """alice's a1 certificate, shown to bob's metad: refused at the handshake or 403, never bob's view."""
    a1 = deployment.nodes["a1"]
    bob = deployment.metadata["bob"]
    outcome = await attempt(a1.ip, "GET", f"https://{bob.ip}:{INSTANCE_PORT}/self", tls=no_verify_with(a1))
    assert_refused(outcome, "a1's certificate at bob's metad", (deployment.nodes["b1"].cid,))


def no_verify_with(node: Node) -> ssl.SSLContext:
    """TLS presenting ``node``'s agent certificate, checking nothing of the server."""
    ctx = no_verify()
    ctx.load_cert_chain(str(node.file(AGENT_CERT)), str(node.file(AGENT_KEY)))
    return ctx
