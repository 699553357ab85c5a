"""The instance API agents talk to: ``GET /self/...`` (with long-poll) and write-back of own status.

The caller is the instance its client certificate names (``identity.CertificateIdentity``), or in
the legacy mode whoever owns the connection's source address; it sees only its own projection,
may write only its own status keys, and may renew only its own certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography import x509
from yarl import URL

from pitrix import pki
from pitrix.logs import module_logger
from pitrix.metad import gate, issuance, jsonbody, keyspace, render, roster, selfview, status
from pitrix.metad.health import LEASES_KEY, MIRROR_KEY, healthz
from pitrix.metad.identity import Caller, Identity, Refused, SourceIPIdentity
from pitrix.metad.leases import Busy, HeartbeatLeases
from pitrix.metad.mirror import Mirror
from pitrix.metad.tree import split_path
from pitrix.metad.waiters import Waiter
from pitrix.store import Store, StoreError
from pitrix.store.grouped import GroupedPuts

VERSION_HEADER = "X-Metad-Version"
MAX_BODY = 256 * 1024

# Status reports of many instances after one change: written to etcd together (group commit).
PUTS_KEY = web.AppKey("status-puts", GroupedPuts)
WAIT_TIMEOUT_KEY = web.AppKey("wait_timeout", float)
IDENTITY_KEY: web.AppKey[Identity] = web.AppKey("identity")
ISSUER_KEY = web.AppKey("issuer", pki.CertificateAuthority)
LIFETIME_KEY = web.AppKey("cert_lifetime", dt.timedelta)
CSR_MAX = 16 * 1024
SHARED_KEY = web.AppKey("shared_sections", render.SharedSections)
STORE_KEY = web.AppKey("store", Store)
# Seconds a certificate replaced by a renewal stays valid (connections made with it finish).
GRACE_KEY = web.AppKey("renewal_grace", float)
REVOKER_KEY = web.AppKey("grace_revoker", issuance.GraceRevoker)
# Request paths as segments: the whole view, certificate renewal, and where status writes go.
_SELF = split_path(keyspace.SELF)
_SELF_CERT = split_path(keyspace.SELF_CERT)
_SELF_STATUS = split_path(keyspace.SELF_STATUS)


# Made at import, before logs.configure: lazy, or it would ignore --log-level.
_log = module_logger("pitrix.metad.instance")


def _version(mirror: Mirror, revision: int | None = None) -> dict[str, str]:
    headers = {VERSION_HEADER: str(mirror.revision if revision is None else revision)}
    members = mirror.tree.text(roster.DIGEST_KEY)
    if members:
        # The roster's digest on every answer: an agent asks for the list only when it differs.
        headers[roster.HEADER] = members
    return headers


def _caller(request: web.Request) -> Caller:
    return request.app[IDENTITY_KEY].identify(request, request.app[MIRROR_KEY])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def served(handler: Handler) -> Handler:
    """``handler`` with the gate's bookkeeping around it, and a failed identification turned into a
    403 that also closes the connection (an unidentified caller's answer closes it too).

    A wrapper of each route, not middlewares: aiohttp runs an app's middleware chain, with a link
    of its own in front, only for an app that has middlewares, and each link is a coroutine frame
    and a partial kept for as long as a long-poll is held: ~2 KiB of each idle connection's cost,
    where this one frame is ~0.4 KiB. So the instance app has no middlewares, and every route of it
    goes through here (its catch-all route included, for methods no other route takes).
    """

    async def serve(request: web.Request) -> web.StreamResponse:
        closing = gate.request_started(request)
        try:
            response = await handler(request)
        except Refused as exc:
            _log.info("refused", reason=str(exc), path=request.path, peer=request.remote)
            response = _fail(request, 403, str(exc), _version(request.app[MIRROR_KEY]))
            response.force_close()
        except web.HTTPException as exc:
            if closing:
                exc.force_close()
            raise
        if closing:
            response.force_close()
        return response

    return serve


def _expire(future: asyncio.Future[int], revision: int) -> None:
    if not future.done():
        future.set_result(revision)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1", "yes")


def _fail(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An error in metad's shape; ``error`` repeats the message for pitrix's own clients.

    Reads answer in the caller's format, as metad does. Writes (status reports, certificates) are
    pitrix's own endpoints, which no metad client sends: their errors stay JSON whatever the
    caller accepts, for the agent and scripts that parse them.
    """
    read = request.method in ("GET", "HEAD")
    media = render.negotiate(request.headers.get("Accept")) if read else render.JSON
    return render.failure(media, status, message, headers, error=message, **extra)


def clean_path(path: str) -> str:
    """``path`` without ``.``/``..`` segments and doubled slashes, a trailing slash kept: where
    metad redirects a request for an unclean path."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    clean = "/" + "/".join(parts)
    return clean + "/" if path.endswith("/") and clean != "/" else clean


def _redirect(request: web.Request) -> web.Response | None:
    """metad's 301 to the clean path, query kept, for a path with ``.``/``..`` or ``//``."""
    path = request.path
    if "/." not in path and "//" not in path and not path.endswith("/.."):
        return None
    clean = clean_path(path)
    if clean == path:
        return None
    query = request.rel_url.raw_query_string
    location = str(URL.build(path=clean)) + (f"?{query}" if query else "")
    return web.Response(status=301, headers={"Location": location})


def _since(request: web.Request, mirror: Mirror) -> int:
    """The revision a long-poll waits past: ``prev_version`` (``pre_version``), or now when it is
    absent or not an integer (metad holds such a poll too, rather than refusing it)."""
    raw = request.query.get("prev_version", request.query.get("pre_version"))
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            pass
    return mirror.revision


async def read(request: web.Request) -> web.StreamResponse:
    # A long-poll its connection's gate held already (pitrix.metad.parking) is answered now.
    waited = gate.prewaited(request)
    redirect = _redirect(request)
    if redirect is not None:
        return redirect
    mirror = request.app[MIRROR_KEY]
    caller = _caller(request)
    mapping = caller.mapping
    path = "/" + request.match_info["path"]
    media = render.negotiate(request.headers.get("Accept"))
    if not waited and _flag(request, "wait") and selfview.addressable(path):
        since = _since(request, mirror)
        deps = selfview.view_dependencies(mirror.tree, mapping, path)
        if not mirror.changed_since(deps, since):
            # Revoking the caller wakes it too, and the re-identification below refuses it.
            waiter = Waiter(deps + caller.dependencies())
            mirror.waiters.add(waiter)
            # A timer that resolves the waiter, rather than asyncio.wait_for: wait_for wraps the
            # future and adds callbacks, work that a write releasing a thousand waiters repeats.
            timer = asyncio.get_running_loop().call_later(
                request.app[WAIT_TIMEOUT_KEY], _expire, waiter.future, mirror.revision
            )
            try:
                await waiter.future
            finally:
                timer.cancel()
                mirror.waiters.remove(waiter)
            # The caller may have been unmapped or revoked while it waited.
            mapping = _caller(request).mapping
    headers = _version(mirror)
    parts = split_path(path)
    # metad: any value but "false" asks for indented JSON.
    pretty = request.query.get("pretty", "false") not in ("", "false")
    if media == render.JSON and not pretty and (not parts or parts == _SELF):
        # The whole view, the answer a fan-out sends most: spliced from the role's shared sections.
        shared = request.app[SHARED_KEY].get(mirror.tree, mirror.generation, mapping)
        text = render.self_json(mirror.tree, mapping, shared)
        return render.json_text(text if parts else '{"self":' + text + "}", headers)
    value = selfview.lookup(mirror.tree, mapping, path)
    if value is None:
        return render.failure(media, 404, render.NOT_FOUND, headers)
    return render.answer(value, media, headers=headers, pretty=pretty)


def parked_headers(mirror: Mirror) -> str:
    """The headers of :func:`parked_answer`'s answers, written out: the same for every answer the
    mirror's tree generation gives (its revision, the roster's digest)."""
    return render.header_lines(_version(mirror))


def parked_answer(
    mirror: Mirror,
    shared: render.SharedSections,
    mapping: selfview.Mapping,
    root: bool,
    headers: str | None = None,
) -> bytes:
    """The bytes ``read`` answers a woken, plain JSON long-poll of the whole view with (``/`` when
    ``root``, else ``/self``): what a parked poll's gate writes itself (pitrix.metad.parking).
    ``headers``: :func:`parked_headers` of this generation, when the caller keeps them."""
    text = render.self_json(mirror.tree, mapping, shared.get(mirror.tree, mirror.generation, mapping))
    own = parked_headers(mirror) if headers is None else headers
    return render.json_bytes('{"self":' + text + "}" if root else text, own)


async def _json_body(request: web.Request, optional: bool = False) -> Any:
    """The body through the bounded reader (``jsonbody.BodyError`` past its limits)."""
    doc = await jsonbody.read_json(request, MAX_BODY, optional=True)
    if doc is None and not optional:
        raise status.BadBody("body", "is empty; a JSON object is required")
    return doc


async def write(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR_KEY]
    caller = _caller(request)
    mapping = caller.mapping
    parts = split_path(request.match_info["path"])
    puts = request.app[PUTS_KEY]
    if request.method == "POST" and parts == _SELF_CERT:
        return await _renew(request, caller)
    if parts[:2] != _SELF_STATUS or len(parts) < 3:
        return _fail(
            request, 403, "instances may write only their own /self/status/... keys", _version(mirror)
        )
    kind = parts[2]
    try:
        if kind == keyspace.HEARTBEAT and len(parts) == 3:
            doc, interval = status.heartbeat(await _json_body(request, optional=True))
            key = mapping.status_key(keyspace.HEARTBEAT)
            stored = mirror.tree.text(key)
            written = await request.app[LEASES_KEY].beat(
                mapping.instance_id,
                key,
                status.bounded(doc),
                interval,
                news=status.heartbeat_is_news(doc, stored),
                stored=stored,
            )
            revision = mirror.revision if written is None else written
        elif kind in (keyspace.APPLIED, keyspace.HEALTH) and len(parts) == 3:
            body = await _json_body(request)
            doc = status.applied(body) if kind == keyspace.APPLIED else status.health(body)
            revision = await puts.put(mapping.status_key(kind), status.bounded(doc))
        elif kind == keyspace.MONITOR and len(parts) == 3:
            doc = status.monitor(await _json_body(request))
            revision = await puts.put(mapping.status_key(kind), status.bounded(doc))
        elif kind == keyspace.CMD and len(parts) == 4:
            cmd_id = parts[3]
            status.check_cmd_id(cmd_id)
            key = mapping.status_key(keyspace.CMD, cmd_id)
            published = mirror.tree.text(keyspace.cmd_id(mapping.cluster_id, mapping.instance_id))
            if cmd_id != published and mirror.tree.live(key) is None:
                # Results only for the command the runtime gave this instance (or one it already
                # reported on): an instance must not fill the shared etcd with ids nobody posted.
                return _fail(
                    request,
                    409,
                    f"cmd_id: {cmd_id!r} is not the command published to this instance",
                    _version(mirror),
                    field="cmd_id",
                )
            doc = status.cmd_result(cmd_id, await _json_body(request))
            revision = await puts.put(key, status.bounded(doc))
        else:
            return _fail(request, 403, f"{'/'.join(parts)} is not a writable status key", _version(mirror))
    except status.BadBody as exc:
        return _fail(request, exc.status, str(exc), _version(mirror), field=exc.field)
    except jsonbody.BodyError as exc:
        return jsonbody.error_response(exc, _version(mirror))
    except Busy as exc:
        # Said once per refused beat at debug: at the rate they come, a warning each would be
        # most of the log (the count is ``HeartbeatLeases.refused``).
        _log.debug("first beat refused", instance_id=mapping.instance_id, retry_after=exc.retry_after)
        headers = _version(mirror) | {"Retry-After": str(exc.retry_after)}
        return _fail(request, 503, str(exc), headers, retry_after=exc.retry_after)
    except StoreError as exc:
        _log.warning("status write failed", instance_id=mapping.instance_id, error=str(exc))
        return _fail(request, 503, f"metadata store unavailable: {exc}", _version(mirror))
    return web.json_response({"ok": True, "revision": revision}, headers=_version(mirror, revision))


async def _renew(request: web.Request, caller: Caller) -> web.Response:
    """Sign a fresh certificate for the caller's own subject from its CSR (key rotation included)."""
    mirror = request.app[MIRROR_KEY]
    if caller.cert is None:
        return _fail(request, 403, "certificate renewal needs a client certificate", _version(mirror))
    issuer = request.app.get(ISSUER_KEY)
    if issuer is None:
        return _fail(request, 503, "this metad has no issuer configured for renewals", _version(mirror))
    try:
        raw = await jsonbody.read_bytes(request, CSR_MAX)
    except jsonbody.BodyError:
        return _fail(request, 413, f"csr: larger than {CSR_MAX} bytes", _version(mirror), field="csr")
    if raw.lstrip().startswith(b"{"):
        try:
            doc = jsonbody.parse(raw)
            raw = str(doc["csr"]).encode()
        except (jsonbody.BodyError, KeyError, TypeError):
            return _fail(request, 400, 'body: JSON must be {"csr": "<PEM>"}', _version(mirror), field="csr")
    try:
        issued = await asyncio.to_thread(issuer.sign_csr, raw, caller.cert.subject, request.app[LIFETIME_KEY])
        key_sha256 = issuance.public_key_sha256(raw)
    except pki.PKIError as exc:
        return _fail(request, 400, str(exc), _version(mirror), field=exc.field)
    renewed, pending = issuance.replaced(mirror, caller.cert.serial)
    if renewed:
        again = issuance.successor(pending, key_sha256)
        if again is not None:
            return web.json_response(_redelivered(again), headers=_version(mirror))
        return _fail(
            request, 409, "this certificate was already renewed; renew with its successor", _version(mirror)
        )
    answer = _certificate_answer(issuer, issued)
    record = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    old_cert = record.getpeercert(binary_form=True) if record is not None else None
    old_not_after = (
        x509.load_der_x509_certificate(old_cert).not_valid_after_utc.timestamp() if old_cert else 0.0
    )
    try:
        # Recorded (and the replaced certificate's revocation scheduled) before it is handed out.
        await issuance.replace(
            request.app[STORE_KEY], caller.mapping, caller.cert.serial, old_not_after, issued,
            answer["certificate"], request.app[GRACE_KEY],
        )  # fmt: skip
    except issuance.AlreadyRenewed as exc:
        return _fail(request, 409, str(exc), _version(mirror))
    except StoreError as exc:
        return _fail(request, 503, f"metadata store unavailable: {exc}", _version(mirror))
    _log.info(
        "certificate renewed",
        instance_id=caller.mapping.instance_id,
        serial=pki.serial_hex(issued.serial),
        replaced=pki.serial_hex(caller.cert.serial),
    )
    return web.json_response(answer, headers=_version(mirror))


async def bootstrap(request: web.Request) -> web.Response:
    """An instance's first certificate, for the one-time token its userdata carried.

    The cloud names an instance only after its userdata is fixed, so the runtime cannot put a
    certificate there; it puts a random token instead and, once the instance is running, the
    token's hash into the instance's mapping. Whoever shows the token gets a certificate for that
    mapping's identity (CN = instance id, O = owner, OU = cluster), whatever the CSR names.
    Reachable without a client certificate: this is how an instance gets one.
    """
    mirror = request.app[MIRROR_KEY]
    headers = _version(mirror)
    issuer = request.app.get(ISSUER_KEY)
    if issuer is None:
        return _fail(request, 503, "this metad has no issuer configured for certificates", headers)
    try:
        doc = jsonbody.parse(await jsonbody.read_bytes(request, CSR_MAX))
    except jsonbody.BodyError as exc:
        if exc.status == 413 or "nested" in str(exc):
            return jsonbody.error_response(exc, headers)
        return _fail(request, 400, 'body: must be JSON {"token": ..., "csr": "<PEM>"}', headers, field="body")
    if not isinstance(doc, dict):
        return _fail(request, 400, 'body: must be a JSON object {"token", "csr"}', headers, field="body")
    token, csr = doc.get("token"), doc.get("csr")
    if not isinstance(token, str) or not token:
        return _fail(request, 400, "token: a non-empty string is required", headers, field="token")
    if not isinstance(csr, str) or not csr:
        return _fail(request, 400, "csr: a PEM certificate request is required", headers, field="csr")
    mapping = mirror.by_bootstrap_token(token)
    owner = mirror.tree.text(keyspace.owner(mapping.cluster_id)) if mapping is not None else ""
    if mapping is None or not owner:
        # The runtime maps an instance once it runs: until then, the agent asks again.
        return _fail(
            request, 404, "no instance is registered for this token yet", headers, reason="not_registered"
        )
    if mirror.tree.live(keyspace.revoked_instance(mapping.instance_id)) is not None:
        _log.warning("bootstrap refused: revoked", instance_id=mapping.instance_id, peer=request.remote)
        return _fail(request, 403, f"instance {mapping.instance_id} is revoked", headers)
    if not _same_address(request.remote, mapping.ip):
        # Agents bind their connections to their VM's address (the simulator's too), so a token
        # that leaked out of the VM is of no use from anywhere else.
        _log.warning(
            "bootstrap refused: wrong address",
            instance_id=mapping.instance_id,
            peer=request.remote,
            ip=mapping.ip,
        )
        return _fail(
            request,
            403,
            f"the bootstrap token of {mapping.instance_id} is accepted only from {mapping.ip}",
            headers,
        )
    try:
        key_sha256 = issuance.public_key_sha256(csr.encode())
    except pki.PKIError as exc:
        return _fail(request, 400, str(exc), headers, field="csr")
    token_sha256 = mapping.bootstrap_sha256
    spent = issuance.used(mirror, token_sha256)
    if spent is not None:
        again = issuance.redelivery(spent, mapping, key_sha256)
        if again is None:
            _log.warning(
                "bootstrap refused: token used", instance_id=mapping.instance_id, peer=request.remote
            )
            return _fail(request, 409, str(issuance.TokenUsed(spent)), headers, reason="token_used")
        return web.json_response(_redelivered(again), headers=headers)
    if mapping.bootstrap_expires and time.time() >= mapping.bootstrap_expires:
        _log.warning("bootstrap refused: token expired", instance_id=mapping.instance_id, peer=request.remote)
        return _fail(
            request,
            403,
            f"the bootstrap token of {mapping.instance_id} expired; the runtime must hand it a new one",
            headers,
            reason="token_expired",
        )
    subject = pki.Subject(cn=mapping.instance_id, o=owner, ou=mapping.cluster_id)
    try:
        issued = await asyncio.to_thread(
            issuer.sign_csr, csr.encode(), None, request.app[LIFETIME_KEY], assign=subject
        )
    except pki.PKIError as exc:
        return _fail(request, 400, str(exc), headers, field="csr")
    try:
        # The token is consumed in the transaction that records the certificate: of two uses,
        # one wins; the other gets nothing (or, asking with the same key, the same certificate).
        certificate, revision = await issuance.consume(
            request.app[STORE_KEY], mapping, issued, _chain(issuer)
        )
    except issuance.TokenUsed as exc:
        _log.warning("bootstrap refused: token used", instance_id=mapping.instance_id, peer=request.remote)
        return _fail(request, 409, str(exc), headers, reason="token_used")
    except StoreError as exc:
        return _fail(request, 503, f"metadata store unavailable: {exc}", headers)
    if revision is not None:
        # Read your writes: whatever asks this metad next (the runtime for the issued certificate,
        # the agent for its view) finds the record, as after a management write.
        await request.app[MIRROR_KEY].wait_for_revision(revision)
    _log.info(
        "certificate bootstrapped",
        instance_id=mapping.instance_id,
        cluster_id=mapping.cluster_id,
        serial=pki.serial_hex(issued.serial),
        peer=request.remote,
    )
    return web.json_response(_redelivered(certificate), headers=headers)


def _chain(issuer: pki.CertificateAuthority) -> bytes:
    """What follows a signed certificate: the issuer's certificate, unless the issuer is a root."""
    return b"" if issuer.cert.issuer == issuer.cert.subject else issuer.cert_pem


def _redelivered(certificate: str) -> dict[str, Any]:
    """The answer for a certificate (and its chain) as recorded."""
    cert = x509.load_pem_x509_certificate(certificate.encode())
    return {
        "certificate": certificate,
        "serial": pki.serial_hex(cert.serial_number),
        "not_after": cert.not_valid_after_utc.timestamp(),
    }


def _same_address(peer: str | None, ip: str) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def _certificate_answer(issuer: pki.CertificateAuthority, issued: pki.Issued) -> dict[str, Any]:
    """A signed certificate with the issuer's certificate after it, unless the issuer is a root."""
    chain = _chain(issuer)
    return {
        "certificate": (issued.cert_pem + chain).decode(),
        "serial": pki.serial_hex(issued.serial),
        "not_after": issued.cert.not_valid_after_utc.timestamp(),
    }


async def _start_revoker(app: web.Application) -> None:
    app[REVOKER_KEY].start()


async def _stop_revoker(app: web.Application) -> None:
    await app[REVOKER_KEY].stop()


async def roster_read(request: web.Request) -> web.Response:
    """The metadata cluster's member URLs (``pitrix.metad.roster``), for an identified instance,
    with what its agent turns the list by (its cluster and node ids). Read-only: a write to this
    path is the catch-all's 403."""
    mirror = request.app[MIRROR_KEY]
    mapping = _caller(request).mapping
    headers = _version(mirror)
    node = mirror.tree.live(roster.KEY)
    urls = roster.published(node.obj()) if node is not None else None
    if urls is None:
        return _fail(request, 404, "no roster is published", headers)
    node_id = mirror.tree.text(mapping.sources[selfview.HOST] + "/node_id") or mapping.instance_id
    body = {"urls": urls, "digest": roster.digest(urls), "cluster_id": mapping.cluster_id, "node_id": node_id}
    return web.json_response(body, headers=headers)


async def not_allowed(request: web.Request) -> web.Response:
    _caller(request)
    return _fail(request, 405, f"{request.method} is not supported on the instance API")


def build_app(
    mirror: Mirror,
    store: Store,
    leases: HeartbeatLeases,
    wait_timeout: float,
    identity: Identity | None = None,
    issuer: pki.CertificateAuthority | None = None,
    cert_lifetime: dt.timedelta = pki.INSTANCE_LIFETIME,
    renewal_grace: float = issuance.DEFAULT_RENEWAL_GRACE,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)  # no middlewares: see ``served``
    app[IDENTITY_KEY] = identity if identity is not None else SourceIPIdentity()
    if issuer is not None:
        app[ISSUER_KEY] = issuer
    app[LIFETIME_KEY] = cert_lifetime
    app[MIRROR_KEY] = mirror
    app[SHARED_KEY] = render.SharedSections()
    app[LEASES_KEY] = leases
    app[PUTS_KEY] = leases.puts  # heartbeats' puts and the other reports' leave together
    app[WAIT_TIMEOUT_KEY] = wait_timeout
    app[STORE_KEY] = store
    app[GRACE_KEY] = renewal_grace
    if issuer is not None:
        app[REVOKER_KEY] = issuance.GraceRevoker(mirror, store)
        app.on_startup.append(_start_revoker)
        app.on_cleanup.append(_stop_revoker)
    app.router.add_get("/healthz", served(healthz))
    app.router.add_post(keyspace.SELF_BOOTSTRAP, served(bootstrap))
    app.router.add_get(roster.PATH, served(roster_read))
    app.router.add_get("/{path:.*}", served(read))
    app.router.add_put("/{path:.*}", served(write))
    app.router.add_post("/{path:.*}", served(write))
    app.router.add_route("*", "/{path:.*}", served(not_allowed))
    return app


__all__ = ["build_app"]
