"""``GET /v1/replicas`` and the ``pitrix_replica_*`` series: what an operator reads of the fleet."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, APP, DEAD_CLOUD
from prometheus_client.parser import text_string_to_metric_families

from pitrix.runtime.service import RuntimeService


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_replicas_are_listed_to_admins_with_their_share(
    api: TestClient[Any, Any], service: RuntimeService
) -> None:
    await service.put_runtime(DEAD_CLOUD)
    cluster, _ = await service.create_cluster(owner="alice", runtime="dead", app=APP)
    assert (await api.get("/v1/replicas", headers=auth(ALICE))).status == 403  # addresses: admins only
    response = await api.get("/v1/replicas", headers=auth(ADMIN))
    assert response.status == 200
    body = await response.json()
    assert body["replica"] == service.replica
    (row,) = body["replicas"]
    assert row["id"] == service.replica and row["self"] is True
    assert row["clusters_owned"] == 1 and row["lease_age"] >= 0
    metrics = await (await api.get("/metrics", headers=auth(ADMIN))).text()
    samples = {
        s.name: s
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name.startswith("pitrix_replica")
    }
    assert samples["pitrix_replica_clusters_owned"].value == 1
    assert samples["pitrix_replica_clusters_owned"].labels == {"replica": service.replica}
    assert samples["pitrix_replica_claim_moves_total"].value == 0
    assert {"pitrix_replica_jobs_running", "pitrix_replicas_live"} <= set(samples)
    assert cluster.id
