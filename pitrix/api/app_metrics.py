"""App metrics: what the nodes' monitors report, and the states worth an alert, for /metrics and the page.

One metad watch per live cluster (``/_pitrix/status/<cid>/``) keeps, per node, whether its agent
beats, its last health verdict and monitor report, and the last hour of monitor values in a ring:
the scrape reads memory, never metad, so a slow or unreachable metadata cluster never slows
``/metrics`` down (its nodes' alert series are left out while their watch is down, so "unknown" is
never read as "silent"). Every replica keeps its own feed, so any of them answers.

Memory is bounded: a node's ring holds one sample per monitor run for ``WINDOW`` seconds, at most
``WINDOW / interval + 1`` samples, each 8 bytes per item plus 8 for its time: (1 + items) x 5.6 KiB
per node at the smallest interval (5 s, 721 samples), 3.8 KiB for three items every 30 s.
A sample's time is pitrixd's clock when the report arrived (the
VMs' clocks are not pitrixd's).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pitrix.aio import cancel_and_wait
from pitrix.api.events import Event
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad import keyspace
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.repository import NotFound
from pitrix.runtime.service import RuntimeService
from pitrix.runtime.spec import Monitor
from pitrix.runtime.supervisor import KeyedTasks
from pitrix.store import StoreError

WINDOW = 3600.0  # seconds of history kept per node
# States whose nodes run agents worth watching, and those in which a silent node is news (not a
# create or start still booting it, nor a stop on its way). Not while creating: every replica
# watches every cluster, and a burst of creates opened replicas x clusters watches on the owner's
# metad (a health check, a read, a stream each) just when its agents bootstrap there; the feed
# starts when the create ends (the state's change is an event like any other).
UNWATCHED = frozenset({"pending", "creating", "stopped", "deleting", "deleted"})
QUIET = frozenset({"pending", "creating", "stopping", "stopped", "starting", "deleting", "deleted"})
EXPECTED_TO_BEAT = frozenset({"registered", "ready"})
# Node records read at once when many clusters need theirs (every cluster, at a start).
NODE_READS = 32
FIRST_PAUSE, MAX_PAUSE = 0.5, 30.0


class Ring:
    """One node's last samples: a time and each item's value per monitor run, oldest overwritten."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self.times = array("d")
        self.values: dict[str, array[float]] = {}
        self._next = 0  # where the next sample goes once full

    def add(self, at: float, values: dict[str, float]) -> None:
        full = len(self.times) == self.capacity
        for name in values:
            if name not in self.values:
                self.values[name] = array("d", [math.nan]) * len(self.times)
        if full:
            slot = self._next
            self.times[slot] = at
            for name, column in self.values.items():
                column[slot] = values.get(name, math.nan)
            self._next = (slot + 1) % self.capacity
        else:
            self.times.append(at)
            for name, column in self.values.items():
                column.append(values.get(name, math.nan))

    def order(self) -> Iterator[int]:
        n = len(self.times)
        start = self._next if n == self.capacity else 0
        return ((start + i) % n for i in range(n))

    def since(self, since: float) -> dict[str, list[list[float]]]:
        """Each item's ``[time, value]`` pairs from ``since`` on, oldest first (absent runs left out)."""
        out: dict[str, list[list[float]]] = {name: [] for name in self.values}
        for i in self.order():
            at = self.times[i]
            if at < since:
                continue
            for name, column in self.values.items():
                if not math.isnan(column[i]):
                    out[name].append([at, column[i]])
        return out

    def drop(self, names: set[str]) -> None:
        for name in names:
            self.values.pop(name, None)


@dataclass
class NodeView:
    """What one instance's agent last reported, and its monitor history."""

    beating: bool = False
    health: dict[str, Any] | None = None
    monitor: dict[str, Any] | None = None
    received: float = 0.0  # when the last monitor report arrived (pitrixd's clock)
    ring: Ring | None = None


@dataclass
class ClusterFeed:
    cluster: Cluster
    views: dict[str, NodeView] = field(default_factory=dict)  # by instance id
    nodes: list[Node] = field(default_factory=list)
    nodes_stale: bool = True
    connected: bool = False  # the watch holds the current state


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def stale_after(monitor: Monitor) -> float:
    """How long a node's last values stand for its current ones: a few runs missed is an outage."""
    return max(3.0 * monitor.interval, 60.0)


class AppMetricsFeed:
    def __init__(self, service: RuntimeService, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock
        self._feeds: dict[str, ClusterFeed] = {}
        self._tasks = KeyedTasks("app-metrics")
        self._dirty: set[str] = set()  # clusters whose record changed since the last refresh
        self._wake = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unread = False  # the start could not read the clusters: the sync task reads them all
        self.log = get_logger("pitrix.api.app_metrics")

    # -- which clusters are watched ---------------------------------------------------------------

    async def start(self) -> None:
        """Read every cluster once; if etcd does not answer now (a member lost, a loaded host), the
        daemon still starts and the sync task reads them all at once instead."""
        try:
            await self.refresh(await self.service.list_clusters())
        except StoreError as exc:
            self.log.warning("app metrics not read at start; the sync task reads them", error=str(exc))
            self._unread = True
            self._wake.set()
        self._syncer = asyncio.create_task(self._sync_loop(), name="app-metrics-sync")

    async def close(self) -> None:
        if self._syncer is not None:
            await cancel_and_wait(self._syncer)
        await self._tasks.stop()

    def observe(self, event: Event, received: float) -> None:
        """The event hub's observer: a cluster's change is looked at by the sync task; a node,
        job or step change means its node records may have changed."""
        feed = self._feeds.get(event.cluster_id)
        if event.kind in ("cluster", "cluster_removed"):
            self._dirty.add(event.cluster_id)
            self._wake.set()
        elif feed is not None:
            feed.nodes_stale = True

    async def _sync_loop(self) -> None:
        unread = Backoff(0.5, 10.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh(await self.service.list_clusters() if self._unread else None)
                self._unread = False
            except Exception as exc:  # etcd away: the next change (or scrape) tries again
                self.log.warning("app metrics sync failed", error=str(exc))
                if self._unread:  # nothing is watched yet: no change may come to wake us
                    await asyncio.sleep(unread.next())
                    self._wake.set()

    async def refresh(self, clusters: list[Cluster] | None = None) -> None:
        """Take ``clusters`` (all of them, as just read) or the changed ones as the current
        records: start, keep or end each one's watch, and re-read node records where they changed."""
        async with self._lock:
            if clusters is not None:
                known = {c.id for c in clusters}
                for cid in [c for c in self._feeds if c not in known]:
                    self._forget(cid)
                self._dirty -= known
            else:
                dirty, self._dirty = self._dirty, set()
                clusters = []
                for cid in dirty:
                    try:
                        clusters.append(await self.service.repo.cluster(cid))
                    except NotFound:
                        self._forget(cid)
            for cluster in clusters:
                self._take(cluster)
            stale = [feed for feed in self._feeds.values() if feed.nodes_stale]
            for batch in range(0, len(stale), NODE_READS):  # hundreds at a start: not one by one
                await asyncio.gather(*(self._read_nodes(feed) for feed in stale[batch : batch + NODE_READS]))

    async def _read_nodes(self, feed: ClusterFeed) -> None:
        feed.nodes_stale = False
        feed.nodes = await self.service.nodes(feed.cluster.id)

    def _take(self, cluster: Cluster) -> None:
        if cluster.state in UNWATCHED:
            self._forget(cluster.id)
            return
        feed = self._feeds.get(cluster.id)
        if feed is None:
            feed = self._feeds[cluster.id] = ClusterFeed(cluster)
        else:
            feed.cluster = cluster
        self._tasks.start(cluster.id, lambda: self._follow(cluster.id))

    def _forget(self, cid: str) -> None:
        self._tasks.cancel(cid)
        self._feeds.pop(cid, None)

    # -- one cluster's watch ----------------------------------------------------------------------

    async def _follow(self, cid: str) -> None:
        """Read the cluster's reports whole, then follow their changes, for as long as the
        cluster is watched; whatever breaks it is resumed after a growing pause."""
        backoff = Backoff(FIRST_PAUSE, MAX_PAUSE)
        log = self.log.bind(cluster_id=cid)
        while cid in self._feeds:
            feed = self._feeds[cid]
            try:
                cluster = feed.cluster
                record = await self.service.metadata.get(cluster.owner, cluster.runtime)
                if record is None or record.status != "ready" or not record.ip:
                    raise LookupError("no running metadata service yet")
                client = self.service.metadata.client(record)
                revision = int((await client.healthz())["revision"])
                tree = await client.get_data(keyspace.cluster_status(cid))
                feed.views = {iid: self._view_of(feed, iid, reports) for iid, reports in _tree(tree).items()}
                feed.connected = True
                backoff.reset()
                staged: dict[str, dict[str, Any]] | None = None
                left = 0
                async for event in client.watch(
                    keyspace.cluster_status_prefix(cid), from_revision=revision + 1
                ):
                    kind = event.get("type")
                    if kind == "resync":  # compacted: the full state follows, then it is the view
                        staged, left = {}, int(event.get("count") or 0)
                    elif kind in ("put", "delete"):
                        parsed = keyspace.parse_status(str(event.get("key", "")))
                        if parsed is None or parsed.cluster_id != cid:
                            continue
                        if staged is not None:
                            staged.setdefault(parsed.instance_id, {})[parsed.report] = event.get("value")
                            left -= 1
                        else:
                            self._apply(feed, parsed.instance_id, parsed.report, event, kind == "delete")
                    if staged is not None and left <= 0:
                        feed.views = {iid: self._view_of(feed, iid, r) for iid, r in staged.items()}
                        staged = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                feed.connected = False
                pause = backoff.next()
                log.info(
                    "app metrics watch interrupted",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(pause, 3),
                )
                await asyncio.sleep(pause)

    def _view_of(self, feed: ClusterFeed, iid: str, reports: dict[str, Any]) -> NodeView:
        view = feed.views.setdefault(iid, NodeView())
        view.beating = keyspace.HEARTBEAT in reports
        health = _decoded(reports.get(keyspace.HEALTH))
        view.health = health if isinstance(health, dict) else None
        monitor = _decoded(reports.get(keyspace.MONITOR))
        if isinstance(monitor, dict):
            self.take_report(feed.cluster.id, iid, monitor)
        return view

    def _apply(self, feed: ClusterFeed, iid: str, report: str, event: dict[str, Any], deleted: bool) -> None:
        view = feed.views.setdefault(iid, NodeView())
        if report == keyspace.HEARTBEAT:
            view.beating = not deleted
        elif report == keyspace.HEALTH:
            health = None if deleted else _decoded(event.get("value"))
            view.health = health if isinstance(health, dict) else None
        elif report == keyspace.MONITOR:
            if deleted:  # the instance left the metadata: its history goes with it
                feed.views.pop(iid, None)
                return
            doc = _decoded(event.get("value"))
            if isinstance(doc, dict):
                self.take_report(feed.cluster.id, iid, doc)
        elif report == "" and deleted:
            feed.views.pop(iid, None)

    def take_report(self, cid: str, iid: str, doc: dict[str, Any]) -> bool:
        """One monitor report of instance ``iid`` (its ``values``, ``error``, agent ``time``),
        added to its ring unless it is the report already taken (a replay). Whether it was new."""
        feed = self._feeds.get(cid)
        if feed is None:
            return False
        view = feed.views.setdefault(iid, NodeView())
        if view.monitor is not None and view.monitor.get("time") == doc.get("time") and view.ring is not None:
            return False
        raw = doc.get("values")
        values = {
            str(k): float(v)
            for k, v in (raw.items() if isinstance(raw, dict) else [])
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        view.monitor = {"values": values, "error": doc.get("error"), "time": doc.get("time")}
        view.received = self.clock()
        if view.ring is None:
            interval = min((r.monitor.interval for r in feed.cluster.app.roles if r.monitor), default=5)
            view.ring = Ring(int(WINDOW / max(interval, 5)) + 1)
        view.ring.add(view.received, values)
        return True

    # -- what is read -----------------------------------------------------------------------------

    def node_records(self, cid: str) -> list[Node]:
        feed = self._feeds.get(cid)
        return list(feed.nodes) if feed else []

    def history(self, cluster: Cluster, since: float) -> dict[str, Any]:
        """The cluster's monitor items per role, and each node's samples from ``since`` on."""
        now = self.clock()
        since = max(since, now - WINDOW)
        feed = self._feeds.get(cluster.id)
        roles: dict[str, dict[str, Any]] = {
            role.name: {
                "interval": role.monitor.interval,
                "items": {name: item.model_dump() for name, item in role.monitor.items.items()},
            }
            for role in cluster.app.roles
            if role.monitor is not None
        }
        nodes: list[dict[str, Any]] = []
        if feed is not None:
            for node in feed.nodes:
                view = feed.views.get(node.instance_id) if node.instance_id else None
                if node.role not in roles:
                    continue
                declared: dict[str, Any] = roles[node.role]["items"]
                samples = view.ring.since(since) if view and view.ring else {}
                nodes.append(
                    {
                        "node_id": node.node_id,
                        "role": node.role,
                        "instance_id": node.instance_id,
                        "error": (view.monitor or {}).get("error") if view else None,
                        "samples": {name: samples.get(name, []) for name in declared},
                    }
                )
        return {
            "cluster_id": cluster.id,
            "now": now,
            "since": since,
            "window": WINDOW,
            "watching": bool(feed and feed.connected),
            "roles": roles,
            "nodes": nodes,
        }

    def collect_series(self, clusters: list[Cluster]) -> list[Metric]:
        """The Prometheus families of app metrics and alert states, from memory."""
        labels = ["cluster", "app", "role", "node", "item", "unit"]
        gauges = GaugeMetricFamily(
            "pitrix_app_gauge",
            "An app's monitor item of kind gauge, as the node last reported it",
            labels=labels,
        )
        counters = CounterMetricFamily(
            "pitrix_app_counter",
            "An app's monitor item of kind counter (a running total the app keeps)",
            labels=labels,
        )
        node_labels = ["cluster", "role", "node"]
        failing = GaugeMetricFamily(
            "pitrix_app_monitor_failing",
            "1 when the node's last monitor run gave no values (failed, timed out, unreadable)",
            labels=node_labels,
        )
        silent = GaugeMetricFamily(
            "pitrix_node_silent", "1 when the node's agent heartbeat is gone", labels=node_labels
        )
        unhealthy = GaugeMetricFamily(
            "pitrix_node_unhealthy", "1 when the node's last health report says unhealthy", labels=node_labels
        )
        silent_total = GaugeMetricFamily(
            "pitrix_nodes_silent",
            "Nodes expected to beat whose agent's heartbeat is gone (its lease outlived), all clusters",
        )
        silent_count = 0
        job_failed = GaugeMetricFamily(
            "pitrix_cluster_last_job_failed", "1 when the cluster's last job failed", labels=["cluster"]
        )
        halted = GaugeMetricFamily(
            "pitrix_cluster_recovery_halted",
            "1 when auto-recovery of the cluster is halted",
            labels=["cluster"],
        )
        now = self.clock()
        for cluster in clusters:
            if cluster.state == "deleted":
                continue
            job_failed.add_metric([cluster.id], 1.0 if cluster.last_error else 0.0)
            halted.add_metric([cluster.id], 1.0 if cluster.recovery_halted else 0.0)
            feed = self._feeds.get(cluster.id)
            if feed is None or not feed.connected:
                continue
            alerting = cluster.state not in QUIET
            for node in feed.nodes:
                if not node.instance_id:
                    continue
                view = feed.views.get(node.instance_id) or NodeView()
                key = [cluster.id, node.role, node.node_id]
                if alerting and node.status in EXPECTED_TO_BEAT:
                    silent.add_metric(key, 0.0 if view.beating else 1.0)
                    silent_count += 0 if view.beating else 1
                    if view.health is not None:
                        unhealthy.add_metric(key, 0.0 if view.health.get("ok") is True else 1.0)
                try:
                    monitor = cluster.app.role(node.role).monitor
                except Exception:
                    monitor = None
                if monitor is None or view.monitor is None or now - view.received > stale_after(monitor):
                    continue
                failing.add_metric(key, 1.0 if view.monitor.get("error") else 0.0)
                for name, value in view.monitor["values"].items():
                    item = monitor.items.get(name)
                    if item is None:
                        continue
                    family = counters if item.kind == "counter" else gauges
                    family.add_metric(
                        [cluster.id, cluster.app.name, node.role, node.node_id, name, item.unit], value
                    )
        silent_total.add_metric([], float(silent_count))
        return [gauges, counters, failing, silent, silent_total, unhealthy, job_failed, halted]


def _tree(tree: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tree, dict):
        return {}
    return {iid: reports for iid, reports in tree.items() if isinstance(reports, dict)}


class AppSeries:
    """A collector for the Metrics registry: the feed's series for the clusters of the last scrape."""

    def __init__(self, feed: AppMetricsFeed) -> None:
        self.feed = feed
        self.clusters: list[Cluster] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.feed.collect_series(self.clusters)

    def describe(self) -> list[Metric]:
        return []  # not checked against other collectors' names at registration
