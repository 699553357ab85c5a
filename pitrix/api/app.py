"""The admin API: runtimes, clusters and their actions, jobs, health.

Every handler is a thin adapter over :class:`RuntimeService`; the service owns all rules.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pitrix.api.errors import errors_middleware, json_body
from pitrix.runtime.machine import TRANSITIONAL
from pitrix.runtime.records import Cluster, Job
from pitrix.runtime.service import InvalidRequest, RuntimeService

SERVICE: web.AppKey[RuntimeService] = web.AppKey("service", RuntimeService)
DEFAULT_OWNER = "default"


def _owner(request: web.Request) -> str:
    return DEFAULT_OWNER


def _cluster_view(cluster: Cluster) -> dict[str, Any]:
    data = cluster.model_dump(mode="json")
    data["app"] = {"name": cluster.app.name, "version": cluster.app.version}
    return data


def _job_view(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_runtimes(request: web.Request) -> web.Response:
    runtimes = await request.app[SERVICE].list_runtimes()
    return web.json_response({"runtimes": [r.public() for r in runtimes]})


async def put_runtime(request: web.Request) -> web.Response:
    runtime = await request.app[SERVICE].put_runtime(await json_body(request))
    return web.json_response(runtime.public(), status=201)


async def get_runtime(request: web.Request) -> web.Response:
    runtime = await request.app[SERVICE].get_runtime(request.match_info["name"])
    return web.json_response(runtime.public())


async def list_clusters(request: web.Request) -> web.Response:
    include = request.query.get("all") in ("1", "true")
    clusters = await request.app[SERVICE].list_clusters(_owner(request), include_deleted=include)
    return web.json_response({"clusters": [_cluster_view(c) for c in clusters]})


async def create_cluster(request: web.Request) -> web.Response:
    body = await json_body(request)
    for field in ("runtime", "app"):
        if field not in body:
            raise InvalidRequest(f"{field}: required")
    if not isinstance(body["app"], dict):
        raise InvalidRequest("app: must be an object (the app spec)")
    counts = body.get("counts") or {}
    if not isinstance(counts, dict):
        raise InvalidRequest("counts: must be an object of role: count")
    cluster, job = await request.app[SERVICE].create_cluster(
        owner=_owner(request),
        runtime=str(body["runtime"]),
        app=body["app"],
        name=str(body.get("name", "")),
        counts=counts,
    )
    return web.json_response({"cluster": _cluster_view(cluster), "job": _job_view(job)}, status=202)


async def show_cluster(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cluster = await service.get_cluster(request.match_info["cid"], _owner(request))
    data = _cluster_view(cluster)
    data["nodes"] = [n.model_dump(mode="json") for n in await service.nodes(cluster.id)]
    if cluster.job_id:
        job = await service.get_job(cluster.id, cluster.job_id)
        data["job"] = _job_view(job)
        data["job"]["steps"] = [
            s.model_dump(mode="json") for s in await service.job_steps(cluster.id, job.id)
        ]
    return web.json_response(data)


async def scale_cluster(request: web.Request) -> web.Response:
    body = await json_body(request)
    role, count = body.get("role"), body.get("count")
    if not isinstance(role, str):
        raise InvalidRequest("role: required, a role name")
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidRequest("count: required, a whole number")
    job = await request.app[SERVICE].scale(request.match_info["cid"], role, count, _owner(request))
    return web.json_response({"job": _job_view(job)}, status=202)


async def retry_cluster(request: web.Request) -> web.Response:
    job = await request.app[SERVICE].retry(request.match_info["cid"], _owner(request))
    return web.json_response({"job": _job_view(job)}, status=202)


async def delete_cluster(request: web.Request) -> web.Response:
    job = await request.app[SERVICE].delete_cluster(request.match_info["cid"], _owner(request))
    return web.json_response({"job": _job_view(job)}, status=202)


async def show_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cid = request.match_info["cid"]
    await service.get_cluster(cid, _owner(request))
    job = await service.get_job(cid, request.match_info["job_id"])
    data = _job_view(job)
    data["steps"] = [s.model_dump(mode="json") for s in await service.job_steps(cid, job.id)]
    return web.json_response(data)


async def wait_cluster(request: web.Request) -> web.Response:
    """Hold until the cluster's job has ended or, with ``seen=N``, until more than N of its steps
    have ended (or ``timeout`` seconds: 408), then show the cluster; clients follow progress this way."""
    service = request.app[SERVICE]
    cid = request.match_info["cid"]
    await service.get_cluster(cid, _owner(request))
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

    cluster = await service.wait(cid, progressed, timeout)
    request.match_info["cid"] = cluster.id
    return await show_cluster(request)


def create_app(service: RuntimeService) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=8 * 1024 * 1024)
    app[SERVICE] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/runtimes", list_runtimes)
    app.router.add_post("/v1/runtimes", put_runtime)
    app.router.add_get("/v1/runtimes/{name}", get_runtime)
    app.router.add_get("/v1/clusters", list_clusters)
    app.router.add_post("/v1/clusters", create_cluster)
    app.router.add_get("/v1/clusters/{cid}", show_cluster)
    app.router.add_delete("/v1/clusters/{cid}", delete_cluster)
    app.router.add_post("/v1/clusters/{cid}/scale", scale_cluster)
    app.router.add_post("/v1/clusters/{cid}/retry", retry_cluster)
    app.router.add_get("/v1/clusters/{cid}/wait", wait_cluster)
    app.router.add_get("/v1/clusters/{cid}/jobs/{job_id}", show_job)
    return app
