"""Three pitrixd replicas on a real 3-member etcd share the clusters, through a replica's death and
return (and, in the long form, an etcd leader's and a follower's).

The replicas run as processes on Debian's etcd 3.4 (three members on loopback, mutual TLS, the
transaction limit pitrixd checks at start-up raised), the simulator runs light VMs. Creates are
sent to two replicas; the fleet spreads the clusters over all three. One replica is SIGKILLed
while the creates run: once its lease runs out its clusters are adopted by the other two and
finished, and the simulator's ledger shows no VM leaked and none created twice. Brought back on
its state dir, it takes its share again from the others' idle clusters while scale-outs run, and
no job is cut: every one succeeds and no replica logs a lost ownership.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bench import procs
from bench.stack import TRIVIAL_APP, Stack, wait_state
from pitrix import pki
from pitrix.cli.client import ApiClient
from pitrix.cli.demo import sim_runtime
from pitrix.store import Store

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # the etcd cluster helpers live beside the metad HA test
    sys.path.insert(0, str(TESTS))

from chaos_ops import leaks_and_duplicates  # noqa: E402
from metad.etcd_cluster import EtcdCluster, Member, free_port, require_etcd  # noqa: E402

pytestmark = pytest.mark.timeout(1500)
APP: dict[str, Any] = copy.deepcopy(TRIVIAL_APP)
APP["roles"][0]["count"] = 1
APP["roles"][0]["image"] = "plain"  # no Python check commands at each host change (bench.orchestration)
OWNER_TTL = "2"
DEADLINE = 120.0
REPLICAS = ("r0", "r1", "r2")
LOST = ("ownership lost; the job is left to the cluster's owner", "ownership lost; the job's end is left")


def cluster_pki(pki_dir: Path, members: list[Member]) -> None:
    pki_dir.mkdir()
    ca = pki.CertificateAuthority.create("pitrixd etcd CA")
    (pki_dir / "etcd-ca.pem").write_bytes(ca.cert_pem)
    for m in members:
        cert = ca.issue_server([m.ip, "127.0.0.1"], "etcd-" + m.name, client_auth=True)
        cert.write(pki_dir / f"etcd-{m.name}.crt", pki_dir / f"etcd-{m.name}.key")
    ca.issue_client(pki.Subject("pitrixd", "pitrix", "etcd")).write(
        pki_dir / "etcd-client.crt", pki_dir / "etcd-client.key"
    )


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    if (why := require_etcd()) is not None:
        pytest.fail(why)
    members = [
        Member(f"m{k}", "127.0.0.1", f"https://127.0.0.1:{free_port('127.0.0.1')}", "") for k in range(3)
    ]
    for m in members:
        m.peer_url = f"https://127.0.0.1:{free_port('127.0.0.1')}"
    cluster_pki(tmp_path / "pki", members)
    # pitrixd refuses an etcd whose transaction limit is below its largest write (128 by default).
    cluster = EtcdCluster(
        members, tmp_path / "etcd", tmp_path / "pki", f"pitrixd-{tmp_path.name}", ["--max-txn-ops", "1024"]
    )
    try:
        await cluster.start_all()
        yield cluster
    finally:
        for m in members:
            m.kill()
        for m in members:
            await m.wait_dead()


class Replicas:
    """pitrixd processes on the etcd cluster, each with its own state dir and replica id."""

    def __init__(self, workdir: Path, etcd: EtcdCluster, token: str) -> None:
        self.workdir = workdir
        self.etcd = etcd
        self.token = token
        self.children: dict[str, procs.Child] = {}

    async def start(self, name: str) -> None:
        tls = self.etcd.etcd_tls
        argv = [
            procs.bin_path("pitrixd"),
            "--state-dir",
            str(self.workdir / name),
            "--api-listen",
            "127.0.0.1:0",
        ]
        argv += ["--replica-id", name, "--owner-ttl", OWNER_TTL, "--log-level", "warning"]
        for m in self.etcd.members:
            argv += ["--etcd", m.client_url]
        env = {
            "PITRIX_API__TOKENS": json.dumps([{"token": self.token, "owner": "chaos", "admin": True}]),
            "PITRIX_ETCD__CA_FILE": str(tls.ca_file),
            "PITRIX_ETCD__CERT_FILE": str(tls.cert_file),
            "PITRIX_ETCD__KEY_FILE": str(tls.key_file),
            "PITRIX_SECRETS__KEY_FILE": str(self.workdir / "secret.key"),  # one key for every replica
        }
        self.children[name] = await procs.start(name, argv, self.workdir / f"{name}.log", env)

    def api(self, name: str) -> ApiClient:
        return ApiClient(str(self.children[name].ready["url"]), self.token)

    def logged(self, name: str, words: tuple[str, ...]) -> list[str]:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return [line for line in text.splitlines() if any(w in line for w in words)]

    async def stop(self) -> None:
        for child in self.children.values():
            await child.stop()


async def owners(store: Store) -> tuple[collections.Counter[str], int]:
    kvs, revision = await store.get_prefix("/owners/")
    return collections.Counter(kv.text for kv in kvs), revision


async def until_owners(store: Store, holds: Callable[[collections.Counter[str]], bool], what: str) -> None:
    """Until the owner keys' tally per replica ``holds``, checked on every change (a deadline)."""
    now, revision = await owners(store)
    try:
        async with asyncio.timeout(DEADLINE):
            while not holds(now):
                async for _batch in store.watch_prefix("/owners/", revision + 1):
                    break
                now, revision = await owners(store)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {DEADLINE:.0f}s; owners {dict(now)}") from None


def within(share: collections.Counter[str], names: tuple[str, ...], total: int, slack: float = 0.2) -> bool:
    mean = total / len(names)
    return sum(share.values()) == total and all(abs(share[n] - mean) <= slack * mean for n in names)


async def test_replicas_share_clusters_through_a_replica_s_death_and_return(
    tmp_path: Path, etcd: EtcdCluster, long_form: bool
) -> None:
    # The short form's 15: each replica's share is 5 (4 to 6 within 20%). CHAOS_REPLICAS_CLUSTERS
    # sets another number (the long form's path at a size a busy host runs in a minute).
    clusters = int(os.environ.get("CHAOS_REPLICAS_CLUSTERS") or (300 if long_form else 15))
    stack = Stack(tmp_path, f"127.{procs.private_net()}.0.0/16")
    replicas = Replicas(tmp_path, etcd, "chaos-replicas-token-0123")
    tls = etcd.etcd_tls
    store = await Store.connect([m.client_url for m in etcd.members], prefix="/pitrix", tls=tls)
    try:
        await stack.start_sim("--light")
        await replicas.start("r0")  # it makes the secrets key the others read
        await asyncio.gather(*(replicas.start(name) for name in REPLICAS[1:]))
        async with replicas.api("r0") as api:
            await api.post(
                "/v1/runtimes", {**sim_runtime(stack.sim.ready if stack.sim else {}), "metadata_size": 1}
            )

        # Creates go to r0 and r1 only; r2 is killed while they run. The owner's metadata
        # cluster is made first, by one create, as a deployment's first cluster makes it.
        apis = [replicas.api("r0"), replicas.api("r1")]
        try:
            body = {"runtime": "sim", "app": APP, "channel": "ssh"}
            first = await apis[0].post("/v1/clusters", {**body, "name": "first"})
            view = await wait_state(apis[0], first["cluster"]["id"], timeout=300)
            assert view["state"] == "active", view.get("last_error")
            clusters -= 1  # the bulk; every tally below counts the first one too
            made = await asyncio.gather(
                *(apis[i % 2].post("/v1/clusters", {**body, "name": f"c{i}"}) for i in range(clusters))
            )
            cids = [m["cluster"]["id"] for m in made]
            await until_owners(store, lambda o: o["r2"] >= clusters // 6, "r2 holding its first clusters")
            await replicas.children["r2"].kill()
            if long_form:  # the etcd leader, then a follower, killed and brought back under load
                leader = await etcd.leader()
                follower = next(m for m in etcd.members if m is not leader)
                for victim in (leader, follower):
                    victim.kill()
                    await victim.wait_dead()
                    await asyncio.wait_for(await etcd.start(victim, state="existing"), DEADLINE)
            views = await asyncio.gather(*(wait_state(apis[0], cid, timeout=600) for cid in cids))
            assert {v["state"] for v in views} == {"active"}, [v.get("last_error") for v in views]
            survivors = ("r0", "r1")
            await until_owners(store, lambda o: within(o, survivors, clusters + 1), "r2's clusters adopted")

            ledger = await stack.ledger()
            kept = {n["instance_id"] for v in [view, *views] for n in v.get("nodes", [])}
            leaked, duplicated = leaks_and_duplicates(ledger, kept, metadata_alive=True)
            assert not leaked and not duplicated, (leaked, duplicated)

            # r2 comes back while a third of the clusters scale out: it gets its share back
            # from the idle ones, and every job ends as it would have on one replica.
            scaled = cids[: clusters // 3]
            jobs = await asyncio.gather(
                *(
                    apis[i % 2].post(f"/v1/clusters/{cid}/scale", {"role": "node", "count": 2})
                    for i, cid in enumerate(scaled)
                )
            )
            await replicas.start("r2")
            await until_owners(store, lambda o: within(o, REPLICAS, clusters + 1), "shares even again")
            ends = await asyncio.gather(
                *(
                    wait_state(apis[0], cid, job["job"]["id"], timeout=600)
                    for cid, job in zip(scaled, jobs, strict=True)
                )
            )
            assert {(e["state"], e["job"]["status"]) for e in ends} == {("active", "successful")}
            assert all(len(e["nodes"]) == 2 for e in ends)
            for name in REPLICAS:
                assert not replicas.logged(name, LOST), f"{name} cut a job: {replicas.logged(name, LOST)}"
            async with replicas.api("r2") as api:
                shown = {r["id"]: r["clusters_owned"] for r in (await api.get("/v1/replicas"))["replicas"]}
            assert set(shown) == set(REPLICAS)
            ledger = await stack.ledger()
            kept = {n["instance_id"] for e in ends for n in e["nodes"]} | kept
            _, duplicated = leaks_and_duplicates(ledger, kept, metadata_alive=True)
            assert not duplicated, duplicated
        finally:
            for api in apis:
                await api.close()
    finally:
        await store.close()
        await replicas.stop()
        await stack.stop()
