"""Prometheus metrics of pitrixd, kept in a registry of the app's own (never the global one).

Step durations and failures are counted from the event stream, so they cover every step the
runtime journals; cluster counts and the job queue are read from etcd at scrape time, so they are
never stale and every replica gives the same answer. Deleted clusters are not a state worth a gauge
(their records stay for history, so it would only grow): deletions seen are counted instead.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from pitrix import __version__
from pitrix.api.events import Event
from pitrix.runtime.actions import BY_NAME, LIFECYCLE
from pitrix.runtime.lifecycle import STATES
from pitrix.runtime.records import Cluster
from pitrix.runtime.repository import NotFound
from pitrix.runtime.service import WAIT_SLOT_STEP, RuntimeService

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Steps that talk to the cloud: a failure of one of these is a failed cloud call.
CLOUD_STEPS = ("run-instances", "wait-running", "terminate", "metadata")
# Most API calls answer in milliseconds; waits and event streams hold for minutes.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
UNMATCHED = "unmatched"  # the route label of a request no route took (404s of any path)
LIVE_STATES = tuple(s for s in STATES if s != "deleted")
JOB_STATES = ("running", "queued")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@dataclass(frozen=True)
class InFlight:
    """One job not yet ended: its action, and whether it still waits for a job slot."""

    action: str
    queued: bool


async def jobs_in_flight(service: RuntimeService, clusters: list[Cluster]) -> list[InFlight]:
    """Each live cluster's running job, read from etcd (a job waits for a slot while its
    ``wait-slot`` step is open): the same answer on every replica, whichever one runs it."""

    async def one(cluster: Cluster) -> InFlight | None:
        if cluster.job_id is None or not LIFECYCLE.is_transitional(cluster.state):
            return None
        try:
            job = await service.get_job(cluster.id, cluster.job_id)
            if job.status != "running":
                return None
            steps = await service.job_steps(cluster.id, cluster.job_id)
        except NotFound:
            return None
        queued = any(s.name == WAIT_SLOT_STEP and s.status == "running" for s in steps)
        return InFlight(job.action, queued)

    found = await asyncio.gather(*(one(c) for c in clusters))
    return [j for j in found if j is not None]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own figures too: memory, CPU, descriptors, and the garbage collector's
        # collections per generation (see pitrix/gctune.py for why they are worth watching).
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.clusters = Gauge(
            "pitrix_clusters", "Live clusters by lifecycle state", ["state"], registry=self.registry
        )
        self.deleted = Counter(
            "pitrix_clusters_deleted_total",
            "Clusters seen reaching the deleted state since this pitrixd started",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "pitrix_jobs",
            "Jobs not yet ended, by action and whether they run or wait for a job slot",
            ["action", "state"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "pitrix_http_requests_total",
            "Admin API requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "pitrix_http_request_duration_seconds",
            "Time to answer an admin API request (a stream: until it ended), by method, route, status",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        Info("pitrix_build", "The pitrix version this process runs", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        # Every action's series from the start (0 when idle), so a rate or an alert has a series to
        # read before the first job; an action added later (a newer replica's) joins when seen.
        self._actions: set[str] = set(BY_NAME)
        self.step_seconds = Histogram(
            "pitrix_step_duration_seconds",
            "How long a journaled step of a job took, by action step and outcome",
            ["step", "status"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.step_failures = Counter(
            "pitrix_step_failures_total", "Steps that failed, by step", ["step"], registry=self.registry
        )
        self.cloud_errors = Counter(
            "pitrix_cloud_call_errors_total",
            "Failed steps that call the cloud provider, by runtime-independent step name",
            ["step"],
            registry=self.registry,
        )
        self.watch_lag = Gauge(
            "pitrix_watch_lag_seconds",
            "Time from a cluster record's update to its arrival through the etcd watch (last seen)",
            registry=self.registry,
        )
        self.events = Counter(
            "pitrix_events_total",
            "Cluster events delivered by the watch, by kind",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, event: Event, received: float) -> None:
        self.events.labels(event.kind).inc()
        if event.kind == "cluster":
            if event.data["cluster"].get("state") == "deleted":
                self.deleted.inc()
            updated = event.data["cluster"].get("updated")
            if isinstance(updated, int | float):
                self.watch_lag.set(max(0.0, received - updated))
        elif event.kind == "step":
            step = event.data["step"]
            if step.get("status") == "running" or step.get("finished") is None:
                return
            name = str(step.get("name", "")).split(":", 1)[0]
            self.step_seconds.labels(name, step["status"]).observe(
                max(0.0, float(step["finished"]) - float(step["started"]))
            )
            if step["status"] == "failed":
                self.step_failures.labels(name).inc()
                if any(name.startswith(prefix) for prefix in CLOUD_STEPS):
                    self.cloud_errors.labels(name).inc()

    def render(self, clusters: list[Cluster], jobs: list[InFlight] | None = None) -> bytes:
        counts = dict.fromkeys(LIVE_STATES, 0)
        for cluster in clusters:
            if cluster.state != "deleted":
                counts[cluster.state] = counts.get(cluster.state, 0) + 1
        for state, n in counts.items():
            self.clusters.labels(state).set(n)
        if jobs is not None:
            queue = {(job.action, "queued" if job.queued else "running") for job in jobs}
            self._actions |= {action for action, _ in queue}
            for action in self._actions:
                for state in JOB_STATES:
                    n = sum(1 for j in jobs if j.action == action and (j.queued == (state == "queued")))
                    self.jobs.labels(action, state).set(n)
        return generate_latest(self.registry)

    def middleware(self) -> Middleware:
        """Counts and times every request by its route's template (``/v1/clusters/{cid}``), so
        the series stay few whatever ids are asked for. Put first: it sees the status the error
        middleware made of an exception."""

        @web.middleware
        async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
            began = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else UNMATCHED
                if request.match_info.http_exception is not None:
                    route = UNMATCHED
                method = request.method if request.method in METHODS else "other"
                labels = (method, route, str(status))
                self.http_requests.labels(*labels).inc()
                self.http_seconds.labels(*labels).observe(time.monotonic() - began)

        return http_metrics


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
