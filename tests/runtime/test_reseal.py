"""An etcd written by a pitrixd from before sealing: one sweep seals every clear secret, and the
runtime reads the records as before."""

from __future__ import annotations

import json

import asyncssh

from pitrix import pki
from pitrix.runtime.authority import CA_KEY, Authority
from pitrix.runtime.keypairs import keypair_key, load_private_key
from pitrix.runtime.keys import cluster_key, job_key, metadata_key, runtime_key, token_key
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.reseal import MARKER, seal_legacy
from pitrix.runtime.secret_env import open_cluster, open_job
from pitrix.runtime.service import RuntimeService
from pitrix.runtime.spec import parse_spec
from pitrix.sealing import REDACTED, Sealer, is_sealed
from pitrix.store import Store

DEAD_CLOUD = {
    "name": "dead",
    "provider": "qingcloud",
    "endpoint": "http://127.0.0.1:9",
    "zone": "z1",
    "access_key_id": "AK",
    "secret_access_key": "legacy-cloud-secret",
}
APP = {
    "name": "vault",
    "roles": [
        {
            "name": "web",
            "image": "demo",
            "env": {"pw": {"type": "password", "default": "legacy-default-pw"}, "port": 80},
        }
    ],
}


async def write_clear_records(store: Store) -> dict[str, bytes]:
    """Every kind of secret record, as an older pitrixd stored it; the clear texts to look for."""
    ca = pki.CertificateAuthority.create()
    issuer = ca.issue_subordinate("pitrix metadata o/dead")
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh")
    cluster = Cluster(
        id="cl-legacy1",
        name="vault",
        owner="o",
        runtime="dead",
        app=parse_spec(APP),
        counts={"web": 1},
        env={"web": {"pw": "legacy-set-pw", "port": "81"}},
        state="failed",
    )
    job = Job(
        id="j-legacy1",
        cluster_id=cluster.id,
        action="update_env",
        args={"env": {"web": {"pw": "legacy-set-pw"}}, "previous": {"web": {"pw": "legacy-default-pw"}}},
        status="successful",
    )
    meta = MetadataCluster(owner="o", runtime="dead", name="m", issuer_pem=issuer.to_pem().decode())
    await store.put(runtime_key("dead"), json.dumps(DEAD_CLOUD))
    await store.put(CA_KEY, ca.to_pem())
    await store.put(keypair_key("o", "dead"), private)
    await store.put(token_key(cluster.id, "web-1"), "legacy-bootstrap-token")
    await store.put(metadata_key("o", "dead"), meta.model_dump_json())
    await store.put(cluster_key(cluster.id), cluster.model_dump_json())
    await store.put(job_key(cluster.id, job.id), job.model_dump_json())
    return {
        "cloud": b"legacy-cloud-secret",
        "default": b"legacy-default-pw",
        "set": b"legacy-set-pw",
        "token": b"legacy-bootstrap-token",
        "private": b"PRIVATE KEY",
    }


async def test_one_sweep_seals_every_clear_secret_and_the_runtime_still_reads_them(
    store: Store, sealer: Sealer
) -> None:
    clear = await write_clear_records(store)
    counts = await seal_legacy(store, sealer)
    assert counts == {"whole": 3, "runtimes": 1, "metadata": 1, "clusters": 1, "jobs": 1}
    kvs, _ = await store.get_prefix("")
    raw = b"\n".join(kv.value for kv in kvs)
    for what, text in clear.items():
        assert text not in raw, what
    assert await store.get(MARKER) is not None
    assert await seal_legacy(store, sealer) == {}  # done once per etcd

    service = RuntimeService(store, sealer=sealer)
    runtime = await service.get_runtime("dead")
    assert runtime.model_dump()["secret_access_key"] == "legacy-cloud-secret"
    cluster = await service.get_cluster("cl-legacy1")
    assert open_cluster(cluster, sealer).env["web"] == {"pw": "legacy-set-pw", "port": "81"}
    job = await service.get_job("cl-legacy1", "j-legacy1")
    assert job.model_dump(mode="json")["args"]["env"] == {"web": {"pw": REDACTED}}
    assert open_job(job, sealer).args["previous"] == {"web": {"pw": "legacy-default-pw"}}
    authority = await Authority.load(store, sealer)
    assert b"BEGIN CERTIFICATE" in authority.ca_pem()
    private = await load_private_key(store, sealer, "o", "dead")
    assert private.export_public_key("openssh").startswith(b"ssh-ed25519 ")
    record = await service.metadata.get("o", "dead")
    assert record is not None and "PRIVATE KEY" in record.issuer_pem
    kv = await store.get(token_key("cl-legacy1", "web-1"))
    assert kv is not None and is_sealed(kv.value)
    assert sealer.unseal(kv.value, kv.key) == b"legacy-bootstrap-token"
