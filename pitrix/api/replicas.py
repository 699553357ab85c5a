"""The replicas sharing the clusters: ``GET /v1/replicas`` and this replica's own metrics.

Every replica answers the listing from its own view of the fleet (pitrix.runtime.fleet), which the
etcd watches keep current: any replica gives the same list within a watch's delay. The metrics are
this replica's own (a scrape of each replica shows its share), read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pitrix.api.auth import require_admin
from pitrix.runtime.service import RuntimeService


def replicas_route(service: RuntimeService) -> dict[str, Any]:
    """``GET /v1/replicas`` as ``add_route``'s arguments (the handler holds the service)."""

    async def list_replicas(request: web.Request) -> web.Response:
        require_admin(request)  # addresses of every replica: an operator's view
        return web.json_response({"replica": service.replica, "replicas": service.replica_view()})

    return {"method": "GET", "path": "/v1/replicas", "handler": list_replicas}


class ReplicaMetrics(Collector):
    """``pitrix_replica_*``: what this replica holds and runs, and how many claims it moved."""

    def __init__(self, service: RuntimeService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        labels = ["replica"]
        owned = GaugeMetricFamily(
            "pitrix_replica_clusters_owned", "Live clusters this replica owns (drives)", labels=labels
        )
        owned.add_metric([service.replica], len(service.fleet.mine()))
        yield owned
        running = GaugeMetricFamily(
            "pitrix_replica_jobs_running",
            "Cluster jobs this replica runs or holds waiting for a job slot",
            labels=labels,
        )
        running.add_metric([service.replica], service.supervisor.running())
        yield running
        moves = CounterMetricFamily(
            "pitrix_replica_claim_moves",
            "Clusters this replica handed over to another replica or took over from one",
            labels=labels,
        )
        moves.add_metric([service.replica], service.claim_moves)
        yield moves
        live = GaugeMetricFamily("pitrix_replicas_live", "Live replicas this replica sees in the fleet")
        live.add_metric([], len(service.fleet.live()))
        yield live
