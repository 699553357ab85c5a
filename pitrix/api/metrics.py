"""Prometheus metrics of pitrixd, kept in a registry of the app's own (never the global one).

Step durations and failures are counted from the event stream, so they cover every step the
runtime journals; cluster counts are read from etcd at scrape time, so they are never stale.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from pitrix.api.events import Event
from pitrix.runtime.lifecycle import STATES
from pitrix.runtime.records import Cluster

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Steps that talk to the cloud: a failure of one of these is a failed cloud call.
CLOUD_STEPS = ("run-instances", "wait-running", "terminate", "metadata")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's own figures too: memory, CPU, descriptors, and the garbage collector's
        # collections per generation (see pitrix/gctune.py for why they are worth watching).
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.clusters = Gauge(
            "pitrix_clusters", "Clusters by lifecycle state", ["state"], registry=self.registry
        )
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

    def render(self, clusters: list[Cluster]) -> bytes:
        counts = dict.fromkeys(STATES, 0)
        for cluster in clusters:
            counts[cluster.state] = counts.get(cluster.state, 0) + 1
        for state, n in counts.items():
            self.clusters.labels(state).set(n)
        return generate_latest(self.registry)
