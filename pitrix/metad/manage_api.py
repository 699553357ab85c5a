"""The management API pitrixd uses: data, instance mappings and a resumable change stream.

Every write is one etcd transaction, and answers only once this process's mirror has applied it,
so a GET right after a PUT (or the agent's next long-poll answer) reflects the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import time
from typing import Any

from aiohttp import web

from pitrix import pki
from pitrix.logs import module_logger
from pitrix.metad import data, jsonbody, keyspace, membership
from pitrix.metad.health import LEASES_KEY, MIRROR_KEY, healthz
from pitrix.metad.identity import PeerCertificates, Refused, management_allowed
from pitrix.metad.leases import HeartbeatLeases
from pitrix.metad.mirror import Mirror
from pitrix.metad.peering import Peering, PeeringError
from pitrix.metad.tree import join_path, split_path
from pitrix.store import KV, Compare, Op, Store, StoreError, WatchBatch

STORE_KEY = web.AppKey("store", Store)
KEEPALIVE_KEY = web.AppKey("keepalive", float)
CLOSING_KEY = web.AppKey("closing", asyncio.Event)
REQUIRE_CERT_KEY = web.AppKey("require_cert", bool)
CERTIFICATES_KEY = web.AppKey("certificates", PeerCertificates)
PEERING_KEY = web.AppKey("peering", Peering)
MAX_BODY = 64 * 1024 * 1024
MAPPING_FIELDS = ("instance_id", "cluster_id", "role", "ip")
REPLACE_ATTEMPTS = 5

_log = module_logger("pitrix.metad.manage")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "code": status, **extra}, status=status)


def _store_error(exc: StoreError) -> web.Response:
    text = str(exc)
    if "too many operations" in text:
        return _error(
            413,
            f"the write needs more operations than etcd allows in one transaction "
            f"(raise etcd's --max-txn-ops): {text}",
        )
    return _error(503, f"metadata store unavailable: {text}")


async def _body(request: web.Request) -> Any:
    """The JSON body, bounded (``jsonbody.BodyError`` is answered by ``bounded_bodies``)."""
    return await jsonbody.read_json(request, MAX_BODY)


@web.middleware
async def bounded_bodies(request: web.Request, handler: Any) -> web.StreamResponse:
    """A body past the reader's size or depth limit is a 413 or 400 naming it, never a 500."""
    try:
        return await handler(request)
    except jsonbody.BodyError as exc:
        return jsonbody.error_response(exc)


async def _commit(request: web.Request, ops: list[Op]) -> web.Response:
    mirror = request.app[MIRROR_KEY]
    if not ops:
        return web.json_response({"ok": True, "revision": mirror.revision})
    try:
        result = await request.app[STORE_KEY].txn([], ops)
    except StoreError as exc:
        return _store_error(exc)
    await mirror.wait_for_revision(result.revision)
    return web.json_response({"ok": True, "revision": result.revision})


def _subtree(mirror: Mirror, path: str) -> web.Response:
    node = mirror.tree.live(path)
    headers = {"X-Metad-Version": str(mirror.revision)}
    if node is None:
        return web.json_response({"error": f"{path} not found", "code": 404}, status=404, headers=headers)
    return web.Response(text=node.json(), content_type="application/json", headers=headers)


# -- /v1/data -------------------------------------------------------------------------------------


def _data_path(request: web.Request) -> str:
    return join_path(split_path(request.match_info.get("path", "")))


async def data_get(request: web.Request) -> web.Response:
    return _subtree(request.app[MIRROR_KEY], _data_path(request))


async def data_put(request: web.Request) -> web.Response:
    path = _data_path(request)
    try:
        ops = data.merge_ops(request.app[MIRROR_KEY].tree, path, await _body(request))
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    return await _commit(request, ops)


async def _replace(request: web.Request, path: str, doc: Any) -> web.Response:
    """Read the subtree, then write it in one transaction guarded on what was read.

    The guard (every read key still at its revision) turns a concurrent change to the subtree
    into a retry instead of a lost update. A key created concurrently under the subtree is not
    seen by the guard (etcd range compares are not exposed by the store yet) and survives.
    """
    store = request.app[STORE_KEY]
    mirror = request.app[MIRROR_KEY]
    for _ in range(REPLACE_ATTEMPTS):
        try:
            existing, _ = await store.get_prefix(path.rstrip("/") + "/")
            leaf = await store.get(path) if path != "/" else None
            current = existing + ([leaf] if leaf is not None else [])
            ops = data.replace_ops([kv.key for kv in current], path, doc)
            guard = [Compare(kv.key, "mod", "==", kv.mod_revision) for kv in current]
            result = await store.txn(guard, ops)
        except data.BadDocument as exc:
            return _error(400, str(exc), field=exc.field)
        except StoreError as exc:
            return _store_error(exc)
        if result.succeeded:
            await mirror.wait_for_revision(result.revision)
            return web.json_response({"ok": True, "revision": result.revision})
    return _error(409, f"{path} kept changing while being replaced; try again")


async def data_post(request: web.Request) -> web.Response:
    try:
        doc = await _body(request)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    return await _replace(request, _data_path(request), doc)


async def data_delete(request: web.Request) -> web.Response:
    return await _commit(request, data.delete_ops(_data_path(request)))


# -- /v1/mapping ----------------------------------------------------------------------------------


def _iid(request: web.Request) -> str:
    iid = request.match_info["iid"]
    data.check_segment(iid, "instance_id")
    return iid


async def mapping_get(request: web.Request) -> web.Response:
    try:
        iid = _iid(request)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    return _subtree(request.app[MIRROR_KEY], keyspace.mapping(iid))


def _check_mapping(iid: str, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise data.BadDocument("body", "must be a JSON object with cluster_id, role and ip")
    doc = dict(doc)
    if doc.setdefault("instance_id", iid) != iid:
        raise data.BadDocument("instance_id", f"{doc['instance_id']!r} does not match the URL's {iid!r}")
    for field in MAPPING_FIELDS:
        value = doc.get(field)
        if not isinstance(value, str) or not value:
            raise data.BadDocument(field, "is required and must be a non-empty string")
    for field in ("cluster_id", "role"):
        data.check_segment(doc[field], field)
    if doc.get("layout", "") not in keyspace.LAYOUTS:
        shown = ", ".join(repr(v) for v in keyspace.LAYOUTS)
        raise data.BadDocument("layout", f"{doc['layout']!r} is not a host layout (one of {shown})")
    try:
        ipaddress.ip_address(doc["ip"])
    except ValueError as exc:
        raise data.BadDocument("ip", f"{doc['ip']!r} is not an IP address") from exc
    token_hash = doc.get("bootstrap_sha256")
    if token_hash is not None:
        if not isinstance(token_hash, str) or len(token_hash) != 64 or not _is_hex(token_hash):
            raise data.BadDocument("bootstrap_sha256", "must be 64 hexadecimal digits (a sha256)")
        doc["bootstrap_sha256"] = token_hash.lower()
    expires = doc.get("bootstrap_expires")
    if isinstance(expires, str):  # as GET /v1/mapping shows it
        with contextlib.suppress(ValueError):
            expires = float(expires)
    if expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, int | float) or not 0 < expires < math.inf:
            raise data.BadDocument("bootstrap_expires", "must be a positive number (seconds since the epoch)")
        if token_hash is None:
            raise data.BadDocument("bootstrap_expires", "needs bootstrap_sha256 (the token it limits)")
        doc["bootstrap_expires"] = str(float(expires))
    return doc


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


async def mapping_put(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR_KEY]
    try:
        iid = _iid(request)
        doc = _check_mapping(iid, await _body(request))
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    holder = mirror.by_token.get(doc.get("bootstrap_sha256", ""))
    if holder is not None and holder != iid:
        return _error(409, f"bootstrap_sha256 is already instance {holder}'s", field="bootstrap_sha256")
    owner = mirror.by_ip.get(doc["ip"])
    if owner is not None and owner != iid:
        return _error(409, f"ip {doc['ip']} is already mapped to instance {owner}", field="ip")
    return await _replace(request, keyspace.mapping(iid), doc)


async def mapping_delete(request: web.Request) -> web.Response:
    try:
        iid = _iid(request)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    return await _commit(request, data.delete_ops(keyspace.mapping(iid)))


# -- /v1/revoked, /v1/revoked-instances ----------------------------------------------------------


@web.middleware
async def runtime_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """With TLS on, only the runtime's management certificate gets in (healthz aside, for probes)."""
    if request.app[REQUIRE_CERT_KEY] and request.path != "/healthz":
        try:
            management_allowed(request, request.app[MIRROR_KEY], request.app[CERTIFICATES_KEY])
        except Refused as exc:
            _log.info("management refused", reason=str(exc), peer=request.remote)
            response = _error(403, str(exc))
            response.force_close()
            return response
    return await handler(request)


async def revoked_list(request: web.Request) -> web.Response:
    node = request.app[MIRROR_KEY].tree.live(keyspace.REVOKED)
    serials = sorted(name for name, _ in node.live_children()) if node is not None else []
    node = request.app[MIRROR_KEY].tree.live(keyspace.REVOKED_INSTANCES)
    instances = sorted(name for name, _ in node.live_children()) if node is not None else []
    return web.json_response({"serials": serials, "instances": instances})


async def _optional_body(request: web.Request) -> Any:
    doc = await jsonbody.read_json(request, MAX_BODY, optional=True)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise data.BadDocument("body", "must be a JSON object")
    return doc


async def revoke_serial(request: web.Request) -> web.Response:
    """Refuse a certificate from now on; its holder's open long-polls are answered 403 at once."""
    try:
        serial = pki.parse_serial(request.match_info["serial"])
        doc = await _optional_body(request)
    except pki.PKIError as exc:
        return _error(400, str(exc), field=exc.field)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    doc.setdefault("revoked_at", time.time())
    key = keyspace.revoked(pki.serial_hex(serial))
    return await _commit(request, [Op("put", key, json.dumps(doc).encode())])


async def revoke_list(request: web.Request) -> web.Response:
    """Load a whole ``pki.RevocationList`` (its JSON) at once: one transaction, existing entries kept."""
    try:
        raw = await jsonbody.read_bytes(request, MAX_BODY)
        jsonbody.parse(raw)  # its size and depth first: from_json trusts its input's shape
        revoked = pki.RevocationList.from_json(raw)
    except pki.PKIError as exc:
        return _error(400, str(exc), field=exc.field)
    now = time.time()
    ops = [
        Op(
            "put",
            keyspace.revoked(pki.serial_hex(serial)),
            json.dumps({"expires": exp, "revoked_at": now}).encode(),
        )
        for serial, exp in sorted(revoked.entries.items())
    ]
    return await _commit(request, ops)


async def unrevoke_serial(request: web.Request) -> web.Response:
    try:
        serial = pki.parse_serial(request.match_info["serial"])
    except pki.PKIError as exc:
        return _error(400, str(exc), field=exc.field)
    return await _commit(request, [Op("delete", keyspace.revoked(pki.serial_hex(serial)))])


async def revoke_instance(request: web.Request) -> web.Response:
    """Refuse every certificate naming an instance (scale-in, delete), whatever its serial."""
    try:
        iid = _iid(request)
        doc = await _optional_body(request)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    doc.setdefault("revoked_at", time.time())
    return await _commit(request, [Op("put", keyspace.revoked_instance(iid), json.dumps(doc).encode())])


async def unrevoke_instance(request: web.Request) -> web.Response:
    try:
        iid = _iid(request)
    except data.BadDocument as exc:
        return _error(400, str(exc), field=exc.field)
    return await _commit(request, [Op("delete", keyspace.revoked_instance(iid))])


# -- /v1/watch ------------------------------------------------------------------------------------


def _event_line(kind: str, key: str, value: bytes | None, revision: int) -> bytes:
    text = None if value is None else value.decode(errors="replace")
    return (json.dumps({"revision": revision, "type": kind, "key": key, "value": text}) + "\n").encode()


def _batch_lines(batch: WatchBatch) -> list[bytes]:
    if batch.resync:
        # The count lets a client tell a complete resync from one cut short by a dropped stream.
        head = json.dumps({"type": "resync", "revision": batch.revision, "count": len(batch.state)}) + "\n"
        state: list[KV] = batch.state
        return [head.encode(), *(_event_line("put", kv.key, kv.value, kv.mod_revision) for kv in state)]
    return [
        _event_line(e.type, e.key, e.value if e.type == "put" else None, e.revision) for e in batch.events
    ]


async def watch(request: web.Request) -> web.StreamResponse:
    prefix = request.query.get("prefix", "/") or "/"
    if not prefix.startswith("/"):
        return _error(400, "prefix must start with '/'", field="prefix")
    raw = request.query.get("from_revision")
    from_revision: int | None = None
    if raw not in (None, ""):
        try:
            from_revision = int(str(raw))
        except ValueError:
            return _error(400, f"from_revision: {raw!r} is not an integer", field="from_revision")
        if from_revision < 0:
            return _error(400, "from_revision must be >= 0", field="from_revision")
        from_revision = from_revision or None
    # The store runs each watch on a channel apart from the one of every other call (its watch
    # pool): the runtime's 300 watches at once leave heartbeats and writes unhurried.
    store = request.app[STORE_KEY]
    keepalive = request.app[KEEPALIVE_KEY]
    closing = request.app[CLOSING_KEY]
    queue: asyncio.Queue[WatchBatch | BaseException] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        iterator = store.watch_prefix(prefix, from_revision)
        try:
            async for batch in iterator:
                await queue.put(batch)
        except Exception as exc:
            await queue.put(exc)
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    # The first byte tells the client its stream is established before anything changes.
    await response.write(b"\n")
    task = asyncio.create_task(pump(), name="metad-manage-watch")
    closed = asyncio.create_task(closing.wait())
    try:
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if closed in done:
                    break
                await response.write(b"\n")
                continue
            item = getter.result()
            if isinstance(item, BaseException):
                _log.warning("management watch failed", prefix=prefix, error=str(item))
                break
            await response.write(b"".join(_batch_lines(item)))
    except ConnectionResetError:
        pass
    finally:
        closed.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return response


# -- /v1/etcd/members ------------------------------------------------------------------------------


def _membership_error(exc: membership.MembershipError) -> web.Response:
    if isinstance(exc, membership.Busy):
        return _error(503, str(exc), retry=True)
    return _error(409, str(exc))


async def etcd_members(request: web.Request) -> web.Response:
    """The etcd members of this metadata cluster: which started, which leads, which is this one's."""
    try:
        found, leader, local = await membership.members(request.app[STORE_KEY])
    except membership.MembershipError as exc:
        return _membership_error(exc)
    return web.json_response(
        {
            "members": [m.as_json(leader, local) for m in found],
            "leader": f"{leader:x}",
            "local": f"{local:x}",
        }
    )


async def etcd_member_remove(request: web.Request) -> web.Response:
    """Remove a lost member by its name (``/v1/etcd/members/<name>``) or ``?peer_url=``; a member
    not listed is ``removed: false`` (a re-run after the first answer was lost)."""
    name = request.match_info.get("name", "")
    peer_url = request.query.get("peer_url", "")
    if peer_url:
        try:
            peer_url = membership.check_peer_url(peer_url)
        except membership.BadPeerURL as exc:
            return _error(400, f"peer_url: {exc}", field="peer_url")
    elif not name:
        return _error(400, "name: give the member's name in the path, or ?peer_url=", field="name")
    try:
        gone = await membership.remove(request.app[STORE_KEY], name=name, peer_url=peer_url)
    except membership.MembershipError as exc:
        return _membership_error(exc)
    if gone is not None:
        _log.warning("etcd member removed", name=gone.name, peer_urls=gone.peer_urls)
    return web.json_response({"removed": gone is not None, "name": gone.name if gone else name})


async def etcd_member_add(request: web.Request) -> web.Response:
    """Add a member's peer URL; answers what the new member starts with: every member's peer URL
    by name (the new one under the ``name`` given) and the state ``existing``."""
    doc = await _body(request)
    if not isinstance(doc, dict):
        return _error(400, "body: must be a JSON object with name and peer_url", field="body")
    name = doc.get("name")
    if not isinstance(name, str) or not name or "=" in name or "," in name:
        return _error(400, "name: the new member's etcd name (non-empty, no '=' or ',')", field="name")
    try:
        peer_url = membership.check_peer_url(doc.get("peer_url"))
    except membership.BadPeerURL as exc:
        return _error(400, f"peer_url: {exc}", field="peer_url")
    store = request.app[STORE_KEY]
    try:
        current, _, _ = await membership.members(store)
        for member in current:
            if member.name == name and peer_url not in member.peer_urls:
                listed_at = member.peer_urls
                return _error(409, f"name: member {name!r} is still listed at {listed_at}", field="name")
            if not member.started and peer_url not in member.peer_urls:
                return _error(
                    409,
                    f"member {member.peer_urls} was added but never started: remove it first "
                    "(DELETE /v1/etcd/members?peer_url=...)",
                    field="peer_url",
                )
        listed, added = await membership.add(store, peer_url)
    except membership.MembershipError as exc:
        return _membership_error(exc)
    if added:
        _log.warning("etcd member added", name=name, peer_url=peer_url)
    members = {
        m.name: m.peer_urls[0] for m in listed if m.name and m.peer_urls and peer_url not in m.peer_urls
    }
    members[name] = peer_url
    return web.json_response({"added": added, "members": members, "state": "existing"})


# -- /v1/etcd/peer-setup --------------------------------------------------------------------------


def _peering(request: web.Request) -> Peering | web.Response:
    peering = request.app.get(PEERING_KEY)
    if peering is None:
        return _error(409, "this metad's etcd is not its own embedded one: it has no peer set-up to change")
    return peering


async def etcd_peer_setup_get(request: web.Request) -> web.Response:
    """Whether this metad's etcd is a member of several (``member``), and until it is, the CSR of
    the peer key it made for that (``pitrix.metad.peering``)."""
    peering = _peering(request)
    if isinstance(peering, web.Response):
        return peering
    return web.json_response(await peering.status())


async def etcd_peer_setup_post(request: web.Request) -> web.Response:
    """Move this single member's etcd to the peers' mutual TLS, data kept (it restarts); a member
    already answers what it is."""
    peering = _peering(request)
    if isinstance(peering, web.Response):
        return peering
    doc = await _body(request)
    try:
        return web.json_response(await peering.adopt(doc))
    except PeeringError as exc:
        extra = {"retry": True} if exc.status == 503 else {}
        return _error(exc.status, str(exc), field=exc.field, **extra)


def build_app(
    mirror: Mirror,
    store: Store,
    keepalive: float,
    closing: asyncio.Event,
    require_cert: bool = False,
    peering: Peering | None = None,
    leases: HeartbeatLeases | None = None,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[runtime_only, bounded_bodies])
    if leases is not None:  # healthz says how many first beats it refused
        app[LEASES_KEY] = leases
    app[REQUIRE_CERT_KEY] = require_cert
    app[CERTIFICATES_KEY] = PeerCertificates()
    app[MIRROR_KEY] = mirror
    app[STORE_KEY] = store
    app[KEEPALIVE_KEY] = keepalive
    app[CLOSING_KEY] = closing
    if peering is not None:
        app[PEERING_KEY] = peering
    app.router.add_get("/healthz", healthz)
    for route in ("/v1/data", "/v1/data/{path:.*}"):
        app.router.add_get(route, data_get)
        app.router.add_put(route, data_put)
        app.router.add_post(route, data_post)
        app.router.add_delete(route, data_delete)
    app.router.add_get("/v1/mapping/{iid}", mapping_get)
    app.router.add_put("/v1/mapping/{iid}", mapping_put)
    app.router.add_delete("/v1/mapping/{iid}", mapping_delete)
    app.router.add_get("/v1/watch", watch)
    app.router.add_get("/v1/revoked", revoked_list)
    app.router.add_post("/v1/revoked", revoke_list)
    app.router.add_put("/v1/revoked/{serial}", revoke_serial)
    app.router.add_delete("/v1/revoked/{serial}", unrevoke_serial)
    app.router.add_put("/v1/revoked-instances/{iid}", revoke_instance)
    app.router.add_delete("/v1/revoked-instances/{iid}", unrevoke_instance)
    app.router.add_get("/v1/etcd/members", etcd_members)
    app.router.add_post("/v1/etcd/members", etcd_member_add)
    app.router.add_delete("/v1/etcd/members", etcd_member_remove)
    app.router.add_delete("/v1/etcd/members/{name}", etcd_member_remove)
    app.router.add_get("/v1/etcd/peer-setup", etcd_peer_setup_get)
    app.router.add_post("/v1/etcd/peer-setup", etcd_peer_setup_post)
    return app
