"""What both of metad's ports share: where an app finds the mirror, and the health answer.

Probes (a load balancer, the runtime, an agent choosing among endpoints) ask either port the same
question: does this metad follow etcd, at which revision, with how many waiters and instances;
and how many first heartbeats it has under way and has refused as busy (the runtime's wait for a
new node's first heartbeat waits on while metad refuses them: a busy metad is not a silent agent).
"""

from __future__ import annotations

from aiohttp import web

from pitrix.metad.leases import HeartbeatLeases
from pitrix.metad.mirror import Mirror

MIRROR_KEY = web.AppKey("mirror", Mirror)
LEASES_KEY = web.AppKey("leases", HeartbeatLeases)


async def healthz(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR_KEY]
    ok = mirror.healthy
    body: dict[str, object] = {
        "ok": ok,
        "revision": mirror.revision,
        "waiters": len(mirror.waiters),
        "instances": len(mirror.mappings),
    }
    leases = request.app.get(LEASES_KEY)
    if leases is not None:
        body["first_beats"] = {"under_way": leases.granting, "refused": leases.refused}
    return web.json_response(body, status=200 if ok else 503)
