"""Secrets on the simulator: sealed in every etcd record, hidden in every view, real on the nodes.

A cluster with a password parameter (a spec default, then changed by update_env), the runtime's
credentials, the CA, a key pair and the nodes' bootstrap tokens: the raw etcd keys hold none of
them in clear, the views show ``******``, and the cluster's own nodes still get the real values.
"""

from __future__ import annotations

import json

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.api.events import cluster_view
from pitrix.runtime.authority import CA_KEY
from pitrix.runtime.keypairs import keypair_key
from pitrix.runtime.keys import cluster_key, job_key, metadata_key, runtime_key, token_key
from pitrix.runtime.service import InvalidRequest
from pitrix.sealing import REDACTED, is_sealed
from pitrix.store import Store

pytestmark = pytest.mark.e2e

FIRST, SECOND = "first-pw-9d3e1a", "second-pw-47b0c2"
SHOW = {
    "name": "password",
    "dest": "/etc/app/password",
    "keys": ["/env"],
    "text": '{{getv "/env/admin_password"}}\n',
    "mode": "0600",
}


async def everything(store: Store) -> bytes:
    kvs, _ = await store.get_prefix("")
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)


async def test_secrets_are_sealed_in_etcd_hidden_in_views_and_delivered_to_the_nodes(
    cloud: Cloud, store: Store
) -> None:
    service = cloud.service
    app = demo_app()
    web = app["roles"][0]
    web["env"]["admin_password"] = {"type": "password", "default": FIRST}
    web["templates"] = [SHOW]
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app, counts={"web": 1, "lb": 0})
    await expect(service, cluster.id, "active")
    (node,) = await service.nodes(cluster.id)
    assert cloud.vm_file(node.instance_id, SHOW["dest"]) == f"{FIRST}\n"  # opened for its own node

    job = await service.update_env(cluster.id, {"web": {"admin_password": SECOND}})
    after = await expect(service, cluster.id, "active")
    record = await service.metadata.get("o", "sim")
    assert record is not None
    role_env = await service.metadata.client(record).get_data(f"/clusters/{cluster.id}/env/web")
    assert role_env["admin_password"] == SECOND  # what the node reads as /self/env/admin_password

    # Views: the cluster, the env job (new and previous values), none shows a password.
    assert cluster_view(after)["env"]["web"]["admin_password"] == REDACTED
    shown_job = (await service.get_job(cluster.id, job.id)).model_dump(mode="json")
    assert shown_job["args"]["env"] == {"web": {"admin_password": REDACTED}}
    assert shown_job["args"]["previous"] == {"web": {"admin_password": REDACTED}}
    # Changing it to what it already is is told apart without opening it to the caller.
    with pytest.raises(InvalidRequest, match="already the current one") as same:
        await service.update_env(cluster.id, {"web": {"admin_password": SECOND}})
    assert SECOND not in str(same.value)

    # A key pair for the owner, made the way an ssh-channel cluster makes it.
    await service.keypairs.get(await service.provider_for("sim"), "o", "sim")

    raw = await everything(store)
    secret = cloud.sim.ready["secret_access_key"]
    for clear in (FIRST, SECOND, secret, "PRIVATE KEY"):
        assert clear.encode() not in raw, clear
    for key in (CA_KEY, keypair_key("o", "sim"), token_key(cluster.id, node.node_id)):
        kv = await store.get(key)
        assert kv is not None and is_sealed(kv.value), key
    stored_runtime = json.loads((await store.get(runtime_key("sim"))).value)  # type: ignore[union-attr]
    assert is_sealed(stored_runtime["secret_access_key"])
    stored_meta = json.loads((await store.get(metadata_key("o", "sim"))).value)  # type: ignore[union-attr]
    assert not stored_meta["issuer_pem"] or is_sealed(stored_meta["issuer_pem"])
    stored_cluster = json.loads((await store.get(cluster_key(cluster.id))).value)  # type: ignore[union-attr]
    assert is_sealed(stored_cluster["env"]["web"]["admin_password"])
    stored_job = json.loads((await store.get(job_key(cluster.id, job.id))).value)  # type: ignore[union-attr]
    assert is_sealed(stored_job["args"]["env"]["web"]["admin_password"])

    await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")
