"""The admin API: apps, runtimes, clusters and their actions, jobs, events, health and metrics.

Every handler is a thin adapter over :class:`RuntimeService`; the service owns all rules. Who may
see what is decided here, from the request's identity (see ``pitrix.api.auth``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from pitrix.api.app_metrics import AppMetricsFeed, AppSeries
from pitrix.api.auth import Identity, Tokens, auth_middleware, identity_of, require_admin
from pitrix.api.endpoints import endpoints_view
from pitrix.api.errors import errors_middleware, json_body
from pitrix.api.event_log import EventLog, HistoryLimits, parse_since
from pitrix.api.events import EventHub, cluster_view
from pitrix.api.guard import Guard, guard_middleware
from pitrix.api.metrics import Metrics, jobs_in_flight
from pitrix.api.node_shell import ShellLimits, node_shell
from pitrix.api.openapi import openapi_document
from pitrix.api.replicas import ReplicaMetrics, replicas_route
from pitrix.api.stream import stream_events, stream_history
from pitrix.api.ui import ui_page
from pitrix.appcenter.errors import PackageError
from pitrix.logs import get_logger
from pitrix.runtime.actions import BY_VERB, TRANSITIONAL
from pitrix.runtime.catalog import AppCatalog
from pitrix.runtime.lifecycle import STATES
from pitrix.runtime.node_commands import NodeCommand, NodeCommandFailed, exec_request, logs_request
from pitrix.runtime.records import Cluster, Job, Runtime
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.runtime.tabs import TabFailed
from pitrix.settings import ApiSettings

SERVICE: web.AppKey[RuntimeService] = web.AppKey("service", RuntimeService)
EVENTS: web.AppKey[EventHub] = web.AppKey("events", EventHub)
SHELL_LIMITS: web.AppKey[ShellLimits] = web.AppKey("shell_limits", ShellLimits)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
APPS: web.AppKey[AppCatalog] = web.AppKey("apps", AppCatalog)
APP_METRICS: web.AppKey[AppMetricsFeed] = web.AppKey("app_metrics", AppMetricsFeed)
APP_SERIES: web.AppKey[AppSeries] = web.AppKey("app_series", AppSeries)
READY_TIMEOUT = 2.0
OWNER = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
ID_LIKE = re.compile(r"cl-[0-9a-f]{8}")  # a name of this form could not stand for a cluster


def _job_view(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


def _runtime_view(runtime: Runtime) -> dict[str, Any]:
    return runtime.public()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when etcd answers and the event watch runs: then every API call can be served."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[SERVICE].ready(), READY_TIMEOUT)
        checks["etcd"] = "ok"
    except Exception as exc:
        checks["etcd"] = f"unavailable: {type(exc).__name__}"
    checks["events"] = "ok" if request.app[EVENTS].running else "not running"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    require_admin(request)  # every owner's clusters and app values: admins (or an open API) only
    clusters = await request.app[SERVICE].list_clusters(include_deleted=True)
    await request.app[APP_METRICS].refresh(clusters)  # app metrics: the series of these clusters
    request.app[APP_SERIES].clusters = clusters
    jobs = await jobs_in_flight(request.app[SERVICE], clusters)
    body = request.app[METRICS].render(clusters, jobs)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# -- apps --------------------------------------------------------------------------------------------


def _catalog_owner(request: web.Request) -> str:
    """Whose view of the catalog a request reads: its own, or with ``?owner=`` (admins) another's."""
    identity = identity_of(request)
    owner = request.query.get("owner", identity.owner)
    if owner != identity.owner and not identity.admin:
        raise InvalidRequest("owner: only an admin token may read another owner's apps")
    if not OWNER.match(owner):
        raise InvalidRequest("owner: must be an owner name (lower case letters, digits, _ . -)")
    return owner


async def list_apps(request: web.Request) -> web.Response:
    apps = await request.app[APPS].usable(_catalog_owner(request))
    return web.json_response({"apps": [a.summary() for a in apps]})


async def register_app(request: web.Request) -> web.Response:
    publish = _flag(request, "publish")
    if publish:
        require_admin(request)
    body = await json_body(request)
    record, new = await request.app[APPS].register(body, identity_of(request).owner, publish)
    return web.json_response(record.view(), status=201 if new else 200)


async def show_app(request: web.Request) -> web.Response:
    catalog = request.app[APPS]
    # GET /v1/apps/import has a route of its own (its POST imports a package): the app so named.
    name = request.match_info.get("name", "import")
    record = await catalog.resolve(name, request.query.get("version"), _catalog_owner(request))
    data = record.view()
    data["versions"] = await catalog.versions(record)
    return web.json_response(data)


async def import_app(request: web.Request) -> web.Response:
    """An AppCenter package converted (pitrix.appcenter) and registered as ``apps add`` does;
    with ``dry_run`` only converted. The report says what each field became."""
    publish = _flag(request, "publish")
    if publish:
        require_admin(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("<body>: an object with files (and images, dry_run, name, version)")
    unknown = sorted(set(body) - {"files", "images", "dry_run", "name", "version"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field (files, images, dry_run, name, version)")
    files, images = body.get("files"), body.get("images") or {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InvalidRequest("files: an object of path -> text")
    if not isinstance(images, dict) or not all(isinstance(v, str) for v in images.values()):
        raise InvalidRequest("images: an object of role (or *) -> image id")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidRequest("dry_run: true or false")
    name, version = body.get("name"), body.get("version", "1.0.0")
    if not isinstance(name, str | None) or not isinstance(version, str):
        raise InvalidRequest("name: a string" if not isinstance(name, str | None) else "version: a string")
    from pitrix.appcenter.importer import import_package  # only here: most pitrixd runs import no package

    try:
        conversion = await asyncio.to_thread(import_package, files, images=images, name=name, version=version)
    except PackageError as exc:
        raise InvalidRequest(str(exc)) from None
    data: dict[str, Any] = {
        "app": conversion.spec["name"],
        "version": conversion.spec["version"],
        "report": [line.as_dict() for line in conversion.report],
        "dry_run": dry_run,
    }
    if dry_run:
        data["spec"] = conversion.spec
        return web.json_response(data)
    _, new = await request.app[APPS].register(conversion.spec, identity_of(request).owner, publish)
    return web.json_response(data, status=201 if new else 200)


# -- runtimes ----------------------------------------------------------------------------------------


async def list_runtimes(request: web.Request) -> web.Response:
    runtimes = await request.app[SERVICE].list_runtimes()
    return web.json_response({"runtimes": [_runtime_view(r) for r in runtimes]})


def _check_flag(request: web.Request) -> bool:
    """``?check=true``: save the runtime only once its cloud answered a read-only call with it."""
    value = request.query.get("check", "false").lower()
    if value not in ("true", "1", "false", "0"):
        raise InvalidRequest("check: must be true or false")
    return value in ("true", "1")


async def put_runtime(request: web.Request) -> web.Response:
    require_admin(request)
    check = _check_flag(request)
    runtime = await request.app[SERVICE].put_runtime(await json_body(request), check=check)
    return web.json_response(_runtime_view(runtime), status=201)


async def update_runtime(request: web.Request) -> web.Response:
    require_admin(request)
    check = _check_flag(request)
    name = request.match_info["name"]
    runtime = await request.app[SERVICE].update_runtime(name, await json_body(request), check=check)
    return web.json_response(_runtime_view(runtime))


async def delete_runtime(request: web.Request) -> web.Response:
    require_admin(request)
    await request.app[SERVICE].delete_runtime(request.match_info["name"])
    return web.json_response({"deleted": request.match_info["name"]})


async def get_runtime(request: web.Request) -> web.Response:
    runtime = await request.app[SERVICE].get_runtime(request.match_info["name"])
    return web.json_response(_runtime_view(runtime))


# -- clusters ----------------------------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("1", "true", "0", "false"):
        raise InvalidRequest(f"{name}: must be true or false")
    return value in ("1", "true")


async def list_clusters(request: web.Request) -> web.Response:
    include = _flag(request, "all")
    state, runtime, app = (request.query.get(k) for k in ("state", "runtime", "app"))
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state: must be one of {', '.join(STATES)}")
    clusters = await request.app[SERVICE].list_clusters(
        identity_of(request).scope, include_deleted=include or state == "deleted"
    )
    chosen = [
        c
        for c in clusters
        if (state is None or c.state == state)
        and (runtime is None or c.runtime == runtime)
        and (app is None or c.app.name == app)
    ]
    return web.json_response({"clusters": [cluster_view(c) for c in chosen]})


async def _app_spec(request: web.Request, app: Any, owner: str) -> dict[str, Any]:
    """The spec a create names: inline, or ``name`` / ``name@version`` as the cluster's owner
    sees the catalog (its own apps, then published ones): whoever's VMs run the app chose it."""
    if isinstance(app, dict):
        return app
    if isinstance(app, str) and app:
        name, _, version = app.partition("@")
        record = await request.app[APPS].resolve(name, version or None, owner)
        return record.spec.model_dump(mode="json")
    raise InvalidRequest("app: must be an app spec object or a registered app's name[@version]")


def _name_and_owner(body: dict[str, Any], identity: Identity) -> tuple[str, str]:
    """A new cluster's name and owner as a create or a restore gives them (an admin may create
    for another owner; anyone else for their own)."""
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 64:
        raise InvalidRequest("name: must be a string of at most 64 characters")
    owner = body.get("owner", identity.owner)
    if owner != identity.owner and not identity.admin:
        raise InvalidRequest("owner: only an admin token may create clusters for another owner")
    if not isinstance(owner, str) or not OWNER.match(owner):
        raise InvalidRequest("owner: must be an owner name (lower case letters, digits, _ . -)")
    return name, owner


async def create_cluster(request: web.Request) -> web.Response:
    body = await json_body(request)
    identity = identity_of(request)
    if "restore" in body:  # backup: a create from a backup
        return await restore_cluster(request, body)
    for field in ("runtime", "app"):
        if field not in body:
            raise InvalidRequest(f"{field}: required")
    if not isinstance(body["runtime"], str):
        raise InvalidRequest("runtime: must be a runtime's name")
    counts = body.get("counts") or {}
    if not isinstance(counts, dict):
        raise InvalidRequest("counts: must be an object of role: count")
    name, owner = _name_and_owner(body, identity)
    links = body.get("links") or {}
    if not isinstance(links, dict) or not all(isinstance(v, str) for v in links.values()):
        raise InvalidRequest("links: must be an object of link name: cluster id")
    channel = body.get("channel", "rest")
    if not isinstance(channel, str):
        raise InvalidRequest("channel: must be rest or ssh")
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise InvalidRequest("env: must be an object of role: {key: value} and cluster-level key: value")
    spec = await _app_spec(request, body["app"], owner)
    name = await _unique_name(request, owner, name, str(spec.get("name") or ""))
    cluster, job = await request.app[SERVICE].create_cluster(
        owner=owner,
        runtime=body["runtime"],
        app=spec,
        name=name,
        counts=counts,
        links=links,
        channel=channel,
        env=env,
    )
    return web.json_response({"cluster": cluster_view(cluster), "job": _job_view(job)}, status=202)


async def _unique_name(request: web.Request, owner: str, given: str, default: str) -> str:
    """The new cluster's name, unique among the owner's clusters so it can stand for the id.

    A name given and taken is a 409 naming the field; without one, the app's name, numbered
    (``web-2``) when an earlier cluster of the app has it. Checked when the create is accepted, not
    in its write: two creates racing with one name can both pass (the CLI then asks for the id).
    """
    if ID_LIKE.fullmatch(given):
        raise InvalidRequest("name: must not look like a cluster id (cl-xxxxxxxx)")
    clusters = await request.app[SERVICE].list_clusters(owner)
    taken = {c.name for c in clusters}
    if given:
        if given in taken:
            cid = next(c.id for c in clusters if c.name == given)
            message = f"name: {given!r} is taken by cluster {cid} of {owner}; choose another name"
            error = {"error": {"code": "conflict", "message": message, "field": "name"}}
            raise web.HTTPConflict(text=json.dumps(error), content_type="application/json")
        return given
    name, number = default, 1
    while name in taken:
        number += 1
        name = f"{default}-{number}"
    return name


async def _cluster(request: web.Request) -> Cluster:
    return await request.app[SERVICE].get_cluster(request.match_info["cid"], identity_of(request).scope)


def node_view(node: dict[str, Any], reports: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """A node with what its agent reports: alive (heartbeat), health, applied revision, results.

    ``agent`` is null when the metadata service could not be asked, so "unknown" never reads as "down".
    """
    if reports is None:
        return {**node, "agent": None}
    report = reports.get(node["instance_id"], {}) if node["instance_id"] else {}
    health = report.get("health") if isinstance(report.get("health"), dict) else None
    applied = report.get("applied") if isinstance(report.get("applied"), dict) else None
    resources = (applied or {}).get("resources")
    return {
        **node,
        "agent": {
            "reporting": "heartbeat" in report,
            "health": {"ok": bool(health.get("ok")), "error": health.get("error")} if health else None,
            "applied_revision": int(applied["revision"]) if applied and "revision" in applied else None,
            "resources_ok": (
                all(isinstance(r, dict) and r.get("ok") for r in resources.values())
                if isinstance(resources, dict)
                else None
            ),
        },
    }


async def metadata_view(service: RuntimeService, cluster: Cluster) -> dict[str, Any] | None:
    """The metadata cluster serving ``cluster``: its members and what is wrong with them, if
    anything (a member being replaced, a quorum lost that the operator must restore)."""
    clusters = service.metadata
    holder = clusters.holder(await clusters.runtime(cluster.runtime), cluster.owner)
    record = await clusters.record(holder, cluster.runtime)  # as stored: no tunnel opened for it
    if record is None:
        return None
    return {
        "name": record.name,
        "status": record.status,
        "members": [record.ip, *(m.ip for m in record.members)],
        "condition": record.condition,
    }


async def show_cluster(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cluster = await _cluster(request)
    job = await service.get_job(cluster.id, cluster.job_id) if cluster.job_id else None
    if job is not None and job.status != "running" and cluster.state in TRANSITIONAL:
        # The job ended between the two reads; its end and the cluster's new state are written
        # together, so a second read shows the state the job left (followers stop on this view).
        cluster = await service.get_cluster(cluster.id)
    data = cluster_view(cluster)
    reports = await service.agent_reports(cluster)
    data["nodes"] = [node_view(n.model_dump(mode="json"), reports) for n in await service.nodes(cluster.id)]
    data["endpoints"] = endpoints_view(cluster, data["nodes"])
    data["metadata"] = await metadata_view(service, cluster)
    if job is not None:
        data["job"] = _job_view(job)
        data["job"]["steps"] = [
            s.model_dump(mode="json") for s in await service.job_steps(cluster.id, job.id)
        ]
    return web.json_response(data)


# Actions read the cluster once, where they are judged: another owner's cluster is a 404 there.


async def retry_cluster(request: web.Request) -> web.Response:
    scope = identity_of(request).scope
    job = await request.app[SERVICE].retry(request.match_info["cid"], scope)
    return web.json_response({"job": _job_view(job)}, status=202)


FLAGS = {"true": True, "1": True, "false": False, "0": False}


async def delete_cluster(request: web.Request) -> web.Response:
    """``{"force": true}`` in the body, or ``?force=true``: failing stop/destroy services do not
    stop the delete (see runtime/actions/delete.py)."""
    scope = identity_of(request).scope
    body = await json_body(request) if request.can_read_body else {}
    if "force" in request.query:
        force = FLAGS.get(request.query["force"].lower())
        if force is None:
            raise InvalidRequest("force: must be true or false")
        body = {**body, "force": force or body.get("force", False)}
    job = await request.app[SERVICE].delete_cluster(request.match_info["cid"], scope, body)
    return web.json_response({"job": _job_view(job)}, status=202)


def _action(verb: str) -> Any:
    """``POST /v1/clusters/<id>/<verb>``: the verb's action judges the body (see runtime/actions)."""

    async def handler(request: web.Request) -> web.Response:
        body = await json_body(request) if request.can_read_body else {}
        scope = identity_of(request).scope
        job = await request.app[SERVICE].act(request.match_info["cid"], verb, body, scope)
        return web.json_response({"job": _job_view(job)}, status=202)

    handler.__name__ = f"{verb}_cluster"
    return handler


# -- upgrade: the dry run -----------------------------------------------------------------------------


async def upgrade_preview(request: web.Request) -> web.Response:
    """``GET /v1/clusters/<id>/upgrade?version=V``: the upgrade's diff, no job started."""
    scope = identity_of(request).scope
    body = {"version": request.query.get("version", "")}
    preview = await request.app[SERVICE].upgrade_preview(request.match_info["cid"], body, scope)
    return web.json_response(preview)


async def list_jobs(request: web.Request) -> web.Response:
    cluster = await _cluster(request)
    jobs = await request.app[SERVICE].list_jobs(cluster.id)
    return web.json_response({"jobs": [_job_view(j) for j in jobs]})


async def show_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cluster = await _cluster(request)
    job = await service.get_job(cluster.id, request.match_info["job_id"])
    data = _job_view(job)
    data["steps"] = [s.model_dump(mode="json") for s in await service.job_steps(cluster.id, job.id)]
    return web.json_response(data)


async def wait_cluster(request: web.Request) -> web.Response:
    """Hold until the cluster's job has ended or, with ``seen=N``, until more than N of its steps
    have ended (or ``timeout`` seconds: 408), then show the cluster; clients follow progress this way."""
    service = request.app[SERVICE]
    cid = (await _cluster(request)).id
    try:
        timeout = float(request.query.get("timeout", "60"))
    except ValueError:
        raise InvalidRequest("timeout: must be a number of seconds") from None
    if not 0 < timeout <= 3600:
        raise InvalidRequest("timeout: must be between 0 and 3600 seconds")
    job_id = request.query.get("job")
    try:
        seen = int(request.query["seen"]) if "seen" in request.query else None
    except ValueError:
        raise InvalidRequest("seen: must be a whole number of steps") from None

    async def progressed(cluster: Cluster) -> bool:
        if cluster.state not in TRANSITIONAL and (job_id is None or cluster.job_id == job_id):
            return True
        if seen is None or not cluster.job_id:
            return False
        steps = await service.job_steps(cid, cluster.job_id)
        return sum(1 for s in steps if s.status != "running") > seen

    # Without ``seen`` only the record decides: a step's progress need not wake this wait.
    await service.wait(cid, progressed, timeout, steps=seen is not None)
    return await show_cluster(request)


async def all_events(request: web.Request) -> web.StreamResponse:
    return await stream_events(request, request.app[EVENTS], identity_of(request).scope, None)


async def cluster_events(request: web.Request) -> web.StreamResponse:
    """The cluster's kept events as JSON, or (``?follow=true``, or an ``Accept`` of
    ``text/event-stream`` as browsers' EventSource and the CLI send) as a stream that goes on live."""
    cluster = await _cluster(request)
    hub = request.app[EVENTS]
    since, limit, follow = history_query(request.query, request.headers.get("Accept", ""))
    if hub.history is None:
        return await stream_events(request, hub, None, cluster.id)
    if follow:
        return await stream_history(request, hub, cluster.id, since, limit)
    events, _ = await hub.kept(cluster.id, since, limit)
    return web.json_response({"events": events})


def history_query(query: Any, accept: str) -> tuple[float | None, int | None, bool]:
    """``since``, ``limit`` and ``follow`` of an events request, each refused by name when wrong."""
    since = None
    if "since" in query:
        try:
            since = parse_since(query["since"], time.time())
        except ValueError as exc:
            raise InvalidRequest(f"since: {exc}") from None
    limit = None
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 0 < int(text) <= 100_000:
            raise InvalidRequest("limit: must be a whole number from 1 to 100000")
        limit = int(text)
    follow = query.get("follow", "false").lower()
    if follow not in ("true", "false", "1", "0"):
        raise InvalidRequest("follow: must be true or false")
    return since, limit, follow in ("true", "1") or "text/event-stream" in accept


# -- backups: records, restore and the schedule (pitrix/runtime/backup_service.py) ----------------

RESTORE_BODY = ("restore", "name", "runtime", "owner", "channel", "counts")


async def restore_cluster(request: web.Request, body: dict[str, Any]) -> web.Response:
    """``POST /v1/clusters`` with ``restore``: a new cluster from a backup (its app, counts, env)."""
    identity = identity_of(request)
    unknown = [k for k in body if k not in RESTORE_BODY]
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]}: a restore takes the backup's (only {', '.join(RESTORE_BODY)} are given)"
        )
    name, owner = _name_and_owner(body, identity)
    runtime, channel = body.get("runtime"), body.get("channel")
    if runtime is not None and not isinstance(runtime, str):
        raise InvalidRequest("runtime: must be a runtime's name")
    if channel is not None and channel not in ("rest", "ssh"):
        raise InvalidRequest("channel: must be rest or ssh")
    counts = body.get("counts", {})
    if not isinstance(counts, dict):
        raise InvalidRequest("counts: must be an object of role: count")
    if name:
        name = await _unique_name(request, owner, name, name)
    cluster, job = await request.app[SERVICE].backups.restore(
        owner=owner, restore=body["restore"], name=name, runtime=runtime, channel=channel, counts=counts
    )
    return web.json_response({"cluster": cluster_view(cluster), "job": _job_view(job)}, status=202)


async def list_backups(request: web.Request) -> web.Response:
    records = await request.app[SERVICE].backups.of_cluster(
        request.match_info["cid"], identity_of(request).scope
    )
    return web.json_response({"backups": [r.view() for r in records]})


async def show_backup(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].backups.get(request.match_info["bid"], identity_of(request).scope)
    return web.json_response(record.view())


async def delete_backup(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].backups.delete(request.match_info["bid"], identity_of(request).scope)
    return web.json_response({"deleted": record.id})


async def put_backup_policy(request: web.Request) -> web.Response:
    body = await json_body(request)
    service = request.app[SERVICE]
    policy = await service.backups.put_policy(request.match_info["cid"], body, identity_of(request).scope)
    return web.json_response(policy.model_dump(mode="json"))


async def show_backup_policy(request: web.Request) -> web.Response:
    policy = await request.app[SERVICE].backups.get_policy(
        request.match_info["cid"], identity_of(request).scope
    )
    if policy is None:
        raise web.HTTPNotFound(text=f"cluster {request.match_info['cid']} has no backup policy")
    return web.json_response(policy.model_dump(mode="json"))


async def delete_backup_policy(request: web.Request) -> web.Response:
    await request.app[SERVICE].backups.delete_policy(request.match_info["cid"], identity_of(request).scope)
    return web.json_response({"deleted": request.match_info["cid"]})


def add_backup_routes(add: web.UrlDispatcher) -> None:
    add.add_get("/v1/clusters/{cid}/backups", list_backups)
    add.add_get("/v1/backups/{bid}", show_backup)
    add.add_delete("/v1/backups/{bid}", delete_backup)
    add.add_put("/v1/clusters/{cid}/backup-policy", put_backup_policy)
    add.add_get("/v1/clusters/{cid}/backup-policy", show_backup_policy)
    add.add_delete("/v1/clusters/{cid}/backup-policy", delete_backup_policy)


# -- app metrics (pitrix/api/app_metrics.py) ---------------------------------------------------------


async def cluster_metrics(request: web.Request) -> web.Response:
    """``?since=<unix seconds>``: each node's monitor samples since then (at most the last hour)."""
    cluster = await _cluster(request)
    raw = request.query.get("since", "0")
    try:
        since = float(raw)
    except ValueError:
        raise InvalidRequest(f"since: {raw[:40]!r} is not a time (seconds since the epoch)") from None
    if not math.isfinite(since):
        raise InvalidRequest("since: must be a finite number of seconds since the epoch")
    feed = request.app[APP_METRICS]
    await feed.refresh()
    return web.json_response(feed.history(cluster, since))


# -- display tabs (pitrix/runtime/tabs.py) -----------------------------------------------------------


async def cluster_tab(request: web.Request) -> web.Response:
    """``GET /v1/clusters/<id>/tabs/<name>``: the app's display tab, run now on one live node."""
    service = request.app[SERVICE]
    try:
        table = await service.display_tab(
            request.match_info["cid"], request.match_info["name"], identity_of(request).scope
        )
    except TabFailed as exc:
        raise web.HTTPBadGateway(text=str(exc)) from None
    return web.json_response(table)


# -- looking at a node (pitrix/runtime/node_commands.py) --------------------------------------------


async def _node_command(request: web.Request, command: NodeCommand) -> web.Response:
    """Run ``command`` on the node, with an audit line before (who asked what of which node) and
    after (how it ended): exec is a shell on the node, so each one leaves a trace in pitrixd's log."""
    identity = identity_of(request)
    cid, node = request.match_info["cid"], request.match_info["node"]
    audit = get_logger("pitrix.api.audit").bind(
        cluster_id=cid, node=node, owner=identity.owner, admin=identity.admin, kind=command.kind
    )
    audit.info("node command requested", command=command.shown[:200])
    try:
        view = await request.app[SERVICE].node_command(cid, node, command, identity.scope)
    except NodeCommandFailed as exc:
        audit.info("node command gave no result", error=str(exc))
        raise web.HTTPBadGateway(text=str(exc)) from None
    except Exception as exc:
        audit.info("node command refused", error=str(exc)[:200])
        raise
    audit.info("node command ended", status=view["status"], exit_code=view["exit_code"])
    return web.json_response(view)


async def node_logs(request: web.Request) -> web.Response:
    """``GET /v1/clusters/<cid>/nodes/<node>/logs?lines=N&file=PATH``: a log file's last lines."""
    return await _node_command(request, logs_request(request.query))


async def node_exec(request: web.Request) -> web.Response:
    """``POST /v1/clusters/<cid>/nodes/<node>/exec``: one command on the node, its output tails."""
    return await _node_command(request, exec_request(await json_body(request)))


async def node_ssh(request: web.Request) -> web.StreamResponse:
    """``GET /v1/clusters/<cid>/nodes/<node>/ssh`` (WebSocket): an interactive shell on the node."""
    return await node_shell(request, request.app[SERVICE], identity_of(request), request.app[SHELL_LIMITS])


def create_app(
    service: RuntimeService, tokens: Tokens | None = None, settings: ApiSettings | None = None
) -> web.Application:
    """The admin API over ``service``; without ``tokens`` every request is an admin (tests only).

    ``settings`` gives the names and origins it answers to and its body limit (defaults otherwise).
    """
    api = settings or ApiSettings()
    guard = Guard.build(api.host, api.allowed_hosts, api.allowed_origins, api.max_body_bytes)
    metrics_ = Metrics()
    app = web.Application(
        middlewares=[
            metrics_.middleware(),
            errors_middleware,
            guard_middleware(guard),
            auth_middleware(tokens or Tokens.open()),
        ],
        client_max_size=api.max_body_bytes,
    )
    app[SERVICE] = service
    app[METRICS] = metrics_
    app[APP_METRICS] = feed = AppMetricsFeed(service)
    app[APP_SERIES] = AppSeries(feed)
    metrics_.registry.register(app[APP_SERIES])
    app[EVENTS] = EventHub(
        service.store,
        [metrics_.observe, feed.observe],
        EventLog(service.store, HistoryLimits(api.events_kept, api.events_max_age), service.replica),
        service.records_events,
    )
    app[APPS] = AppCatalog(service.store)
    app[SHELL_LIMITS] = ShellLimits(api.ssh_idle_timeout, api.ssh_max_session)

    async def lifecycle(app: web.Application) -> Any:
        await app[APPS].migrate()
        await app[EVENTS].start()
        await app[APP_METRICS].start()
        yield
        await app[APP_METRICS].close()
        await app[EVENTS].close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(lambda app: app[EVENTS].close())
    add = app.router
    add.add_get("/healthz", healthz)
    add.add_get("/readyz", readyz)
    add.add_get("/metrics", metrics)
    add.add_get("/openapi.json", openapi)
    add.add_get("/ui", ui_page)
    add.add_get("/v1/events", all_events)
    add.add_get("/v1/apps", list_apps)
    add.add_post("/v1/apps", register_app)
    add.add_get("/v1/apps/import", show_app)
    add.add_post("/v1/apps/import", import_app)
    add.add_get("/v1/apps/{name}", show_app)
    add.add_get("/v1/runtimes", list_runtimes)
    add.add_post("/v1/runtimes", put_runtime)
    add.add_get("/v1/runtimes/{name}", get_runtime)
    add.add_patch("/v1/runtimes/{name}", update_runtime)
    add.add_delete("/v1/runtimes/{name}", delete_runtime)
    add.add_get("/v1/clusters", list_clusters)
    add.add_post("/v1/clusters", create_cluster)
    add.add_get("/v1/clusters/{cid}", show_cluster)
    add.add_delete("/v1/clusters/{cid}", delete_cluster)
    add.add_post("/v1/clusters/{cid}/retry", retry_cluster)
    for verb in BY_VERB:
        add.add_post(f"/v1/clusters/{{cid}}/{verb}", _action(verb))
    add.add_get("/v1/clusters/{cid}/wait", wait_cluster)
    add.add_get("/v1/clusters/{cid}/events", cluster_events)
    add.add_get("/v1/clusters/{cid}/jobs", list_jobs)
    add.add_get("/v1/clusters/{cid}/jobs/{job_id}", show_job)
    add.add_get("/v1/clusters/{cid}/upgrade", upgrade_preview)
    add_backup_routes(add)
    add.add_get("/v1/clusters/{cid}/metrics", cluster_metrics)
    add.add_get("/v1/clusters/{cid}/tabs/{name}", cluster_tab)
    add.add_get("/v1/clusters/{cid}/nodes/{node}/logs", node_logs)
    add.add_post("/v1/clusters/{cid}/nodes/{node}/exec", node_exec)
    add.add_get("/v1/clusters/{cid}/nodes/{node}/ssh", node_ssh)
    add.add_route(**replicas_route(service))
    metrics_.registry.register(ReplicaMetrics(service))
    return app
