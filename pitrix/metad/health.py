"""What both of metad's ports share: where an app finds the mirror, and the health answer.

Probes (a load balancer, the runtime, an agent choosing among endpoints) ask either port the same
question: does this metad follow etcd, at which revision, with how many waiters and instances.
"""

from __future__ import annotations

from aiohttp import web

from pitrix.metad.mirror import Mirror

MIRROR_KEY = web.AppKey("mirror", Mirror)


async def healthz(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR_KEY]
    ok = mirror.healthy
    body = {
        "ok": ok,
        "revision": mirror.revision,
        "waiters": len(mirror.waiters),
        "instances": len(mirror.mappings),
    }
    return web.json_response(body, status=200 if ok else 503)
