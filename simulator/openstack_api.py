"""An OpenStack face on the same simulated VMs: Keystone v3, Nova v2.1 and Glance v2, as much as
openstacksdk needs to create, find, stop, start and delete servers.

Servers are the fleet's VMs (created through Nova they are the QingCloud API's instances too);
what Nova has and QingCloud lacks, metadata and the key pair's name, is kept here by server id.
Keystone accepts one user, the simulator's key pair as name and password (project ``pitrix``,
domain ``Default``); tokens live in memory. URLs in catalogs and links are built from the
request's host, so the API works on whatever port the simulator got.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from pitrix.logs import get_logger
from simulator.errors import BAD_STATUS, NOT_FOUND, QUOTA_EXCEEDED, ApiError
from simulator.fleet import Fleet, RunRequest
from simulator.openstack_ports import OpenStackPorts
from simulator.openstack_volumes import OpenStackVolumes
from simulator.vm import VM

PROJECT = "pitrix"
DOMAIN = "Default"
REGION = "RegionOne"
NETWORK = "private"
TOKEN_LIFETIME = timedelta(hours=12)
# Flavors: every (vCPUs, MiB) pair of these, named like c2m4096.
FLAVOR_CPUS = (1, 2, 4, 8, 16)
FLAVOR_MEMORY = (512, 1024, 2048, 4096, 8192, 16384, 32768)
KEY_NAME = re.compile(r"^[A-Za-z0-9 _.@-]{1,255}$")
METADATA_KEY = re.compile(r"^[A-Za-z0-9-_:. ]{1,255}$")
# Fleet status → Nova (status, vm_state, power_state).
NOVA_STATUS = {
    "pending": ("BUILD", "building", 0),
    "running": ("ACTIVE", "active", 1),
    "stopped": ("SHUTOFF", "stopped", 4),
    "suspended": ("SUSPENDED", "suspended", 7),
    "terminated": ("DELETED", "deleted", 0),
    "ceased": ("DELETED", "deleted", 0),
}
TASK_STATE = {
    "creating": "spawning",
    "starting": "powering-on",
    "stopping": "powering-off",
    "terminating": "deleting",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NovaError(Exception):
    """A refused call, in Nova's shape: ``{"badRequest": {"code": 400, "message": ...}}``."""

    KINDS = {
        400: "badRequest",
        401: "unauthorized",
        403: "forbidden",
        404: "itemNotFound",
        409: "conflictingRequest",
    }

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        kind = self.KINDS.get(self.status, "computeFault")
        return web.json_response({kind: {"code": self.status, "message": self.message}}, status=self.status)


def _flavor_id(cpu: int, memory: int) -> str:
    return f"c{cpu}m{memory}"


def _flavors() -> dict[str, tuple[int, int]]:
    return {_flavor_id(c, m): (c, m) for c in FLAVOR_CPUS for m in FLAVOR_MEMORY}


def _mac(ip: str) -> str:
    return "fa:16:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


@dataclass
class Token:
    expires: datetime
    user_id: str


@dataclass
class ServerExtras:
    """What Nova keeps about a server that the fleet's VM does not."""

    metadata: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None
    network: str = NETWORK
    flavor: str = ""
    resized_from: str = ""  # the flavor before a resize not yet confirmed (status VERIFY_RESIZE)


class OpenStackApi:
    def __init__(self, fleet: Fleet, credentials: Mapping[str, str], zone: str) -> None:
        self.fleet = fleet
        self.zone = zone
        self._user = credentials["access_key_id"]
        self._password = credentials["secret_access_key"]
        self._user_id = uuid.uuid5(uuid.NAMESPACE_URL, f"pitrix-sim-user:{self._user}").hex
        self._project_id = uuid.uuid5(uuid.NAMESPACE_URL, f"pitrix-sim-project:{zone}").hex
        self._tokens: dict[str, Token] = {}
        self._servers: dict[str, ServerExtras] = {}
        self._keypairs: dict[str, str] = {}  # Nova key pair name -> the fleet's key pair id
        self._log = get_logger("simulator.openstack", zone=zone)

    def routes(self) -> list[web.RouteDef]:
        nova = "/compute/v2.1"
        return [
            web.get("/identity", self.identity_versions),
            web.get("/identity/", self.identity_versions),
            web.get("/identity/v3", self.identity_version),
            web.get("/identity/v3/", self.identity_version),
            web.post("/identity/v3/auth/tokens", self.issue_token),
            web.get("/compute", self.compute_versions),
            web.get("/compute/", self.compute_versions),
            web.get(nova, self.compute_version),
            web.get(nova + "/", self.compute_version),
            web.get(nova + "/flavors", self._authed(self.list_flavors)),
            web.get(nova + "/flavors/detail", self._authed(self.list_flavors)),
            web.get(nova + "/flavors/{flavor_id}", self._authed(self.get_flavor)),
            web.get(nova + "/os-keypairs", self._authed(self.list_keypairs)),
            web.post(nova + "/os-keypairs", self._authed(self.create_keypair)),
            web.get(nova + "/os-keypairs/{name}", self._authed(self.get_keypair)),
            web.delete(nova + "/os-keypairs/{name}", self._authed(self.delete_keypair)),
            web.get(nova + "/servers", self._authed(self.list_servers)),
            web.get(nova + "/servers/detail", self._authed(self.list_servers)),
            web.post(nova + "/servers", self._authed(self.create_server)),
            web.get(nova + "/servers/{server_id}", self._authed(self.get_server)),
            web.delete(nova + "/servers/{server_id}", self._authed(self.delete_server)),
            web.post(nova + "/servers/{server_id}/action", self._authed(self.server_action)),
            web.get(nova + "/servers/{server_id}/metadata", self._authed(self.get_metadata)),
            web.get("/image", self.image_versions),
            web.get("/image/", self.image_versions),
            web.get("/image/v2/images", self._authed(self.list_images)),
            web.get("/image/v2/images/{image_id}", self._authed(self.get_image)),
            *OpenStackVolumes(self).routes(nova),
            *OpenStackPorts(self).routes(),
        ]

    # -- plumbing ----------------------------------------------------------------------------------

    def _authed(self, handler: Handler) -> Handler:
        """Check X-Auth-Token, then run the handler with Nova's errors as Nova's bodies."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self._tokens.get(request.headers.get("X-Auth-Token", ""))
            try:
                if token is None or token.expires < datetime.now(UTC):
                    raise NovaError(401, "The request you have made requires authentication.")
                return await handler(request)
            except NovaError as exc:
                self._log.info("openstack.refused", path=request.path, status=exc.status, message=exc.message)
                return exc.response()
            except ApiError as exc:
                status = {NOT_FOUND: 404, BAD_STATUS: 409, QUOTA_EXCEEDED: 403}.get(exc.ret_code, 400)
                return NovaError(status, exc.message).response()

        return guarded

    @staticmethod
    async def _body(request: web.Request, key: str) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise NovaError(400, "Malformed request body: not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(key), dict):
            raise NovaError(400, f"Invalid input: '{key}' is a required property")
        return body[key]

    # -- Keystone ----------------------------------------------------------------------------------

    def _identity_doc(self, request: web.Request) -> dict[str, Any]:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{_base(request)}/identity/v3/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }

    async def identity_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": {"values": [self._identity_doc(request)]}}, status=300)

    async def identity_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self._identity_doc(request)})

    def _check_password_auth(self, body: Any) -> None:
        """Password auth for our one user, scoped to our project; 400/401 as Keystone answers."""
        auth = body.get("auth") if isinstance(body, dict) else None
        identity = auth.get("identity") if isinstance(auth, dict) else None
        if not isinstance(identity, dict) or "password" not in (identity.get("methods") or []):
            raise NovaError(400, "Expecting to find identity with password method in auth")
        user = (identity.get("password") or {}).get("user") or {}
        if not isinstance(user, dict):
            raise NovaError(400, "Expecting to find user in password")
        name_ok = user.get("name") == self._user or user.get("id") == self._user_id
        password = str(user.get("password", ""))
        if not name_ok or not hmac.compare_digest(password.encode(), self._password.encode()):
            raise NovaError(401, "The request you have made requires authentication.")
        project = ((auth.get("scope") or {}) if isinstance(auth, dict) else {}).get("project")
        if (
            isinstance(project, dict)
            and project.get("name", PROJECT) != PROJECT
            and project.get("id") != self._project_id
        ):
            raise NovaError(401, f"Project {project.get('name') or project.get('id')} is not known")

    async def issue_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            self._check_password_auth(body)
        except NovaError as exc:
            self._log.info("openstack.auth_refused", status=exc.status)
            title = "Unauthorized" if exc.status == 401 else "Bad Request"
            return web.json_response(
                {"error": {"code": exc.status, "title": title, "message": exc.message}}, status=exc.status
            )
        now = datetime.now(UTC)
        token_id = secrets.token_hex(32)
        self._tokens = {t: v for t, v in self._tokens.items() if v.expires > now}
        self._tokens[token_id] = Token(now + TOKEN_LIFETIME, self._user_id)
        base = _base(request)

        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            endpoints = [
                {"id": uuid.uuid4().hex, "interface": i, "region": REGION, "region_id": REGION, "url": url}
                for i in ("public", "internal", "admin")
            ]
            return {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, url).hex,
                "type": kind,
                "name": name,
                "endpoints": endpoints,
            }

        token = {
            "methods": ["password"],
            "expires_at": (now + TOKEN_LIFETIME).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "user": {"id": self._user_id, "name": self._user, "domain": {"id": "default", "name": DOMAIN}},
            "project": {"id": self._project_id, "name": PROJECT, "domain": {"id": "default", "name": DOMAIN}},
            "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, "member").hex, "name": "member"}],
            "catalog": [
                service("identity", "keystone", f"{base}/identity/v3"),
                service("compute", "nova", f"{base}/compute/v2.1"),
                service("image", "glance", f"{base}/image"),
                service("block-storage", "cinder", f"{base}/volume/v3/{self._project_id}"),
                service("network", "neutron", f"{base}/network"),
            ],
        }
        return web.json_response({"token": token}, status=201, headers={"X-Subject-Token": token_id})

    # -- Nova: discovery and flavors ---------------------------------------------------------------

    def _compute_doc(self, request: web.Request) -> dict[str, Any]:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": "2.1",
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{_base(request)}/compute/v2.1/"}],
        }

    async def compute_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [self._compute_doc(request)]})

    async def compute_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self._compute_doc(request)})

    def _flavor(self, request: web.Request, flavor_id: str) -> dict[str, Any]:
        cpu, memory = _flavors()[flavor_id]
        return {
            "id": flavor_id,
            "name": flavor_id,
            "vcpus": cpu,
            "ram": memory,
            "disk": 10,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "swap": "",
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
            "OS-FLV-DISABLED:disabled": False,
            "links": [{"rel": "self", "href": f"{_base(request)}/compute/v2.1/flavors/{flavor_id}"}],
        }

    async def list_flavors(self, request: web.Request) -> web.Response:
        return web.json_response({"flavors": [self._flavor(request, f) for f in _flavors()]})

    async def get_flavor(self, request: web.Request) -> web.Response:
        flavor_id = request.match_info["flavor_id"]
        if flavor_id not in _flavors():
            raise NovaError(404, f"Flavor {flavor_id} could not be found.")
        return web.json_response({"flavor": self._flavor(request, flavor_id)})

    # -- Nova: key pairs ---------------------------------------------------------------------------

    def _keypair_doc(self, name: str, private_key: str = "") -> dict[str, Any]:
        pair = self.fleet.keypairs.get(self._keypairs[name])
        public_key = pair.pub_key()
        doc: dict[str, Any] = {
            "name": name,
            "public_key": public_key,
            "fingerprint": pair.public_key.get_fingerprint("md5").removeprefix("MD5:"),
            "type": "ssh",
            "user_id": self._user_id,
        }
        if private_key:
            doc["private_key"] = private_key
        return doc

    async def list_keypairs(self, request: web.Request) -> web.Response:
        return web.json_response({"keypairs": [{"keypair": self._keypair_doc(n)} for n in self._keypairs]})

    async def create_keypair(self, request: web.Request) -> web.Response:
        """A Nova key pair is one of the fleet's key pairs: the VMs' SSH servers accept it."""
        body = await self._body(request, "keypair")
        name = body.get("name")
        if not isinstance(name, str) or not KEY_NAME.match(name):
            raise NovaError(400, "Invalid input: keypair name must be 1-255 letters, digits, spaces or ._@-")
        if name in self._keypairs:
            raise NovaError(409, f"Key pair '{name}' already exists.")
        public_key = body.get("public_key")
        if public_key is not None and not isinstance(public_key, str):
            raise NovaError(400, "Invalid input: public_key must be an OpenSSH public key")
        try:
            pair, private_key = self.fleet.keypairs.create(
                name=name,
                mode="user" if public_key else "system",
                encrypt_method="ssh-ed25519",
                public_key=public_key or "",
            )
        except ApiError as exc:
            raise NovaError(400, f"Keypair data is invalid: {exc.message}") from None
        self._keypairs[name] = pair.keypair_id
        return web.json_response({"keypair": self._keypair_doc(name, private_key)})

    async def get_keypair(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._keypairs:
            raise NovaError(404, f"Keypair {name} not found for user {self._user_id}")
        return web.json_response({"keypair": self._keypair_doc(name)})

    async def delete_keypair(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._keypairs:
            raise NovaError(404, f"Keypair {name} not found for user {self._user_id}")
        with contextlib.suppress(ApiError):  # Nova forgets a key pair in use; its servers keep the key
            self.fleet.keypairs.delete([self._keypairs[name]])
        del self._keypairs[name]
        return web.Response(status=202)

    # -- Nova: servers -----------------------------------------------------------------------------

    def _vm(self, server_id: str) -> VM:
        vm = self.fleet.vm(server_id)
        if vm is None or vm.status in ("terminated", "ceased"):
            raise NovaError(404, f"Instance {server_id} could not be found.")
        return vm

    def _server(self, request: web.Request, vm: VM) -> dict[str, Any]:
        extras = self._servers.get(vm.instance_id) or ServerExtras(network=vm.vxnet_id)
        status, vm_state, power = NOVA_STATUS.get(vm.status, ("ERROR", "error", 0))
        task_state = TASK_STATE.get(vm.transition_status)
        if vm.transition_status == "resizing":
            status, task_state = "RESIZE", "resize_migrating"
        elif extras.resized_from:
            status, vm_state = "VERIFY_RESIZE", "resized"
        alive = vm.status not in ("terminated", "ceased")
        link = f"{_base(request)}/compute/v2.1/servers/{vm.instance_id}"
        fixed = {
            "version": 4,
            "addr": vm.ip,
            "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": _mac(vm.ip),
        }
        return {
            "id": vm.instance_id,
            "name": vm.name,
            "status": status,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:task_state": task_state,
            "OS-EXT-STS:power_state": power,
            "OS-EXT-AZ:availability_zone": self.zone,
            "tenant_id": self._project_id,
            "user_id": self._user_id,
            "metadata": dict(extras.metadata),
            "key_name": extras.key_name,
            "image": {"id": vm.image_id, "links": []},
            "flavor": {"id": extras.flavor or _flavor_id(vm.cpu, vm.memory), "links": []},
            "addresses": {extras.network: [fixed]} if alive else {},
            "accessIPv4": "",
            "accessIPv6": "",
            "hostId": uuid.uuid5(uuid.NAMESPACE_URL, self.zone).hex,
            "created": vm.create_time,
            "updated": vm.status_time,
            "progress": 100 if status == "ACTIVE" else 0,
            "config_drive": "",
            "security_groups": [{"name": "default"}],
            "OS-DCF:diskConfig": "MANUAL",
            "links": [{"rel": "self", "href": link}, {"rel": "bookmark", "href": link}],
        }

    async def list_servers(self, request: web.Request) -> web.Response:
        query = request.query
        name_pattern = query.get("name")
        try:
            name_re = re.compile(name_pattern) if name_pattern else None
        except re.error:
            raise NovaError(
                400, f"Invalid input: name {name_pattern!r} is not a regular expression"
            ) from None
        wanted_status = query.get("status", "").upper()
        limit_text = query.get("limit", "1000")
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise NovaError(400, f"Invalid input: limit {limit_text!r} must be a positive integer")
        items, _ = self.fleet.describe(
            instance_ids=[], statuses=[], search_word="", offset=0, limit=1 << 31, verbose=0
        )
        vms = [
            vm
            for vm in (self.fleet.vm(item["instance_id"]) for item in reversed(items))  # oldest first
            if vm is not None and vm.status not in ("terminated", "ceased")
        ]
        vms = [vm for vm in vms if name_re is None or name_re.search(vm.name)]
        if wanted_status:
            vms = [vm for vm in vms if NOVA_STATUS.get(vm.status, ("ERROR",))[0] == wanted_status]
        marker = query.get("marker")
        if marker:
            ids = [vm.instance_id for vm in vms]
            if marker not in ids:
                raise NovaError(400, f"marker [{marker}] not found")
            vms = vms[ids.index(marker) + 1 :]
        limit = int(limit_text)
        page = vms[:limit]
        detailed = request.path.endswith("/detail")
        servers = [
            self._server(request, vm) if detailed else {"id": vm.instance_id, "name": vm.name, "links": []}
            for vm in page
        ]
        body: dict[str, Any] = {"servers": servers}
        if len(vms) > limit:
            next_url = request.url.update_query(marker=page[-1].instance_id, limit=str(limit))
            body["servers_links"] = [{"rel": "next", "href": str(next_url)}]
        return web.json_response(body)

    async def get_server(self, request: web.Request) -> web.Response:
        return web.json_response({"server": self._server(request, self._vm(request.match_info["server_id"]))})

    async def get_metadata(self, request: web.Request) -> web.Response:
        vm = self._vm(request.match_info["server_id"])
        extras = self._servers.get(vm.instance_id) or ServerExtras()
        return web.json_response({"metadata": dict(extras.metadata)})

    def _create_request(self, server: Mapping[str, Any]) -> tuple[RunRequest, ServerExtras]:
        """Nova's server document, checked field by field, as a fleet RunRequest."""
        name = server.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise NovaError(400, "Invalid input for field/attribute name.")
        image = server.get("imageRef")
        if not isinstance(image, str) or not image:
            raise NovaError(400, "Invalid input for field/attribute imageRef.")
        if image not in self.fleet.images.names():
            raise NovaError(400, f"Image {image} could not be found.")
        flavor = server.get("flavorRef")
        flavor = flavor.rstrip("/").rsplit("/", 1)[-1] if isinstance(flavor, str) else flavor
        if not isinstance(flavor, str) or flavor not in _flavors():
            raise NovaError(400, f"Flavor {flavor} could not be found.")
        key_name = server.get("key_name")
        if key_name is not None and key_name not in self._keypairs:
            raise NovaError(400, "Invalid key_name provided.")
        metadata = server.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise NovaError(400, "Invalid input for field/attribute metadata.")
        for key, value in metadata.items():
            if not METADATA_KEY.match(str(key)) or not isinstance(value, str) or len(value) > 255:
                raise NovaError(400, f"Invalid input for field/attribute metadata: {key!r}")
        userdata = None
        if server.get("user_data") is not None:
            try:
                userdata = base64.b64decode(str(server["user_data"]).encode(), validate=True)
            except (binascii.Error, ValueError):
                raise NovaError(400, "User data needs to be valid base 64.") from None
        network = NETWORK
        networks = server.get("networks")
        if isinstance(networks, list) and networks:
            first = networks[0]
            if not isinstance(first, dict) or not isinstance(first.get("uuid"), str):
                raise NovaError(400, "Bad networks format: each network needs a uuid")
            network = first["uuid"]
        elif networks not in (None, "auto", "none", []):
            raise NovaError(400, "Bad networks format")
        cpu, memory = _flavors()[flavor]
        run = RunRequest(
            image_id=image,
            name=name,
            cpu=cpu,
            memory=memory,
            vxnet_id=network,
            login_mode="keypair" if key_name else "passwd",
            keypair_ids=(self._keypairs[key_name],) if key_name else (),
            userdata=userdata,
        )
        return run, ServerExtras(dict(metadata), key_name, network, flavor)

    async def create_server(self, request: web.Request) -> web.Response:
        run, extras = self._create_request(await self._body(request, "server"))
        [server_id], _ = self.fleet.run(run)
        self._servers[server_id] = extras
        self._log.info("openstack.server_created", server_id=server_id, name=run.name, flavor=extras.flavor)
        link = f"{_base(request)}/compute/v2.1/servers/{server_id}"
        body = {
            "id": server_id,
            "links": [{"rel": "self", "href": link}, {"rel": "bookmark", "href": link}],
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}],
            "adminPass": secrets.token_urlsafe(12),
        }
        return web.json_response({"server": body}, status=202)

    async def delete_server(self, request: web.Request) -> web.Response:
        vm = self._vm(request.match_info["server_id"])
        if vm.transition_status != "terminating":  # a second DELETE while deleting is accepted, as Nova does
            self.fleet.terminate([vm.instance_id])
        return web.Response(status=204)

    async def server_action(self, request: web.Request) -> web.Response:
        vm = self._vm(request.match_info["server_id"])
        try:
            body = await request.json()
        except ValueError:
            raise NovaError(400, "Malformed request body: not JSON") from None
        if not isinstance(body, dict) or len(body) != 1:
            raise NovaError(400, "There is not exactly one action in the request body")
        [action] = body
        if action == "os-stop":
            if vm.status != "running" or vm.transition_status:
                raise NovaError(
                    409, f"Cannot 'stop' instance {vm.instance_id} while it is in vm_state {vm.status}"
                )
            self.fleet.stop([vm.instance_id])
        elif action == "os-start":
            if vm.status != "stopped" or vm.transition_status:
                raise NovaError(
                    409, f"Cannot 'start' instance {vm.instance_id} while it is in vm_state {vm.status}"
                )
            self.fleet.start([vm.instance_id])
        elif action == "os-getConsoleOutput":
            return web.json_response({"output": self._console(vm, body[action])})
        elif action in ("resize", "confirmResize"):
            self._resize_action(vm, action, body[action])
        else:
            raise NovaError(
                400, f"Action {action!r} is not supported here (os-start, os-stop, os-getConsoleOutput)"
            )
        return web.Response(status=202)

    def _resize_action(self, vm: VM, action: str, params: Any) -> None:
        """``resize`` to another flavor (ACTIVE or SHUTOFF servers; Nova powers a running one off and
        on again itself), then ``VERIFY_RESIZE`` until ``confirmResize``; the server keeps its power
        state. A resize to the flavor it has, or of a server in another state, is refused as Nova does."""
        extras = self._servers.setdefault(vm.instance_id, ServerExtras(network=vm.vxnet_id))
        if action == "confirmResize":
            if not extras.resized_from:
                raise NovaError(
                    409,
                    f"Cannot 'confirmResize' instance {vm.instance_id} while it is in vm_state {vm.status}",
                )
            extras.resized_from = ""
            return
        flavor = params.get("flavorRef") if isinstance(params, dict) else None
        flavor = flavor.rstrip("/").rsplit("/", 1)[-1] if isinstance(flavor, str) else flavor
        if not isinstance(flavor, str) or flavor not in _flavors():
            raise NovaError(400, f"Flavor {flavor} could not be found.")
        current = extras.flavor or _flavor_id(vm.cpu, vm.memory)
        if flavor == current:
            raise NovaError(400, "When resizing, instances must change flavor!")
        if extras.resized_from or vm.transition_status or vm.status not in ("running", "stopped"):
            raise NovaError(
                409, f"Cannot 'resize' instance {vm.instance_id} while it is in vm_state {vm.status}"
            )
        cpu, memory = _flavors()[flavor]
        if vm.status == "stopped":
            self.fleet.resize_instances([vm.instance_id], cpu, memory)
        else:
            self.fleet.resize_running([vm.instance_id], cpu, memory)
        extras.flavor, extras.resized_from = flavor, current
        self._log.info("openstack.server_resized", server_id=vm.instance_id, flavor=flavor, was=current)

    def _console(self, vm: VM, params: Any) -> str:
        """The server's console log, its last ``length`` lines when asked (all for null or -1).

        What a booted VM prints is cloud-init's host-key block, which clients pin SSH from; a VM
        still building has no console yet, as on Nova (409).
        """
        if not isinstance(params, dict):
            raise NovaError(400, "Invalid input: os-getConsoleOutput must be an object")
        length = params.get("length")
        if isinstance(length, str) and re.fullmatch(r"-?[0-9]+", length):
            length = int(length)
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < -1):
            raise NovaError(400, f"Invalid input: length {length!r} must be an integer of -1 or more")
        if vm.host_key is None:
            raise NovaError(409, f"Instance {vm.instance_id} is not ready yet (no console)")
        lines = str(self.fleet.console(vm.instance_id)["output"]).splitlines(keepends=True)
        if length is not None and length != -1:
            lines = lines[len(lines) - length :] if length else []
        return "".join(lines)

    # -- Glance ------------------------------------------------------------------------------------

    async def image_versions(self, request: web.Request) -> web.Response:
        doc = {
            "id": "v2.9",
            "status": "CURRENT",
            "links": [{"rel": "self", "href": f"{_base(request)}/image/v2/"}],
        }
        return web.json_response({"versions": [doc]}, status=300)

    def _image(self, request: web.Request, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "name": name,
            "status": "active",
            "visibility": "public",
            "container_format": "bare",
            "disk_format": "raw",
            "min_disk": 0,
            "min_ram": 0,
            "tags": [],
            "self": f"/v2/images/{name}",
            "file": f"/v2/images/{name}/file",
            "schema": "/v2/schemas/image",
        }

    async def list_images(self, request: web.Request) -> web.Response:
        names = self.fleet.images.names()
        wanted = request.query.get("name")
        images = [self._image(request, n) for n in names if wanted is None or n == wanted]
        return web.json_response({"images": images, "schema": "/v2/schemas/images", "first": "/v2/images"})

    async def get_image(self, request: web.Request) -> web.Response:
        image_id = request.match_info["image_id"]
        if image_id not in self.fleet.images.names():
            raise NovaError(404, f"No image found with ID {image_id}")
        return web.json_response(self._image(request, image_id))
