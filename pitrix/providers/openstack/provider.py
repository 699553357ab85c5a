"""``OpenStackProvider``: the runtime's provider interface over Nova, with openstacksdk.

openstacksdk is synchronous, so every call runs in a worker thread. Nova has no client token, so
``run_instances`` looks each name up before creating it and a create is never retried blindly: a
create whose answer was lost is found by name at the next attempt. Tags are Nova server metadata.
The flavor is the smallest the cloud offers with the role's vCPUs and memory.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import quote

import openstack
from openstack import exceptions as sdk_exceptions
from openstack.connection import Connection

from pitrix.logs import get_logger
from pitrix.providers.base import (
    Instance,
    InstanceSpec,
    InstanceStatus,
    ProviderError,
    Snapshot,
    SnapshotStatus,
    Volume,
    VolumeSpec,
    VolumeStatus,
    attachable,
)
from pitrix.providers.console import host_keys_from_console
from pitrix.providers.openstack.errors import to_provider_error
from pitrix.providers.openstack.ports import OpenStackPorts
from pitrix.providers.polling import wait_all_running, wait_for, with_retries

T = TypeVar("T")

STATUSES: dict[str, InstanceStatus] = {
    "BUILD": "pending",
    "REBUILD": "pending",
    "REBOOT": "pending",
    "HARD_REBOOT": "pending",
    "ACTIVE": "running",
    "SHUTOFF": "stopped",
    "SUSPENDED": "suspended",
    "PAUSED": "suspended",
    "SHELVED": "suspended",
    "SHELVED_OFFLOADED": "suspended",
    "DELETED": "terminated",
    "SOFT_DELETED": "terminated",
    "RESIZE": "pending",
    "VERIFY_RESIZE": "pending",
}
RUN_CONCURRENCY = 8
# Cinder's volume statuses; one on its way somewhere counts as pending until it gets there.
VOLUME_STATUSES: dict[str, VolumeStatus] = {
    "creating": "pending",
    "attaching": "pending",
    "detaching": "pending",
    "reserved": "pending",
    "downloading": "pending",
    "extending": "pending",
    "available": "available",
    "in-use": "in-use",
    "deleting": "deleted",
    "deleted": "deleted",
}
AUTH_KEYS = ("auth_url", "username", "password")
KEPT_FOR_SNAPSHOTS = "pitrix:kept-for-snapshots"
SNAPSHOT_STATUSES: dict[str, SnapshotStatus] = {
    "creating": "pending",
    "available": "available",
    "backing-up": "available",
    "restoring": "available",
    "deleting": "deleted",
    "deleted": "deleted",
    "error": "error",
    "error_deleting": "error",
}


def task_state(server: Mapping[str, Any]) -> str:
    """Nova's task state, under its API name (raw JSON) or the SDK's attribute name."""
    return str(server.get("OS-EXT-STS:task_state") or server.get("task_state") or "")


def to_instance(server: Mapping[str, Any], ssh_port: int = 22) -> Instance:
    """An ``Instance`` from a server's attributes (``Server.to_dict()``)."""
    nova_status = str(server.get("status") or "").upper()
    status: InstanceStatus = STATUSES.get(nova_status, "unknown")
    if task_state(server) == "deleting":
        status = "terminated"  # on its way out: a lookup must not count it
    private_ip = ""
    for addresses in (server.get("addresses") or {}).values():
        for address in addresses or []:
            if address.get("version") == 4 and address.get("OS-EXT-IPS:type", "fixed") == "fixed":
                private_ip = private_ip or str(address.get("addr") or "")
    return Instance(
        instance_id=str(server["id"]),
        name=str(server.get("name") or ""),
        status=status,
        private_ip=private_ip,
        ssh_port=ssh_port,
        tags={str(k): str(v) for k, v in (server.get("metadata") or {}).items()},
        raw=dict(server),
    )


def to_snapshot(doc: Mapping[str, Any]) -> Snapshot:
    return Snapshot(
        snapshot_id=str(doc["id"]),
        name=str(doc.get("name") or ""),
        volume_id=str(doc.get("volume_id") or ""),
        size=int(doc.get("size") or 0),
        status=SNAPSHOT_STATUSES.get(str(doc.get("status") or ""), "unknown"),
        created=str(doc.get("created_at") or ""),
        tags={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
        raw=dict(doc),
    )


def to_volume(doc: Mapping[str, Any]) -> Volume:
    """A ``Volume`` from Cinder's JSON. Nova's device name is a hint (``/dev/vdb``); a virtio disk
    is also found by its serial, the volume id's first 20 characters, under /dev/disk/by-id."""
    attachments = [a for a in doc.get("attachments") or [] if isinstance(a, Mapping)]
    attached = attachments[0] if attachments else {}
    volume_id = str(doc["id"])
    device = str(attached.get("device") or "")
    paths = (f"/dev/disk/by-id/virtio-{volume_id[:20]}", device) if device else ()
    return Volume(
        volume_id=volume_id,
        name=str(doc.get("name") or ""),
        size=int(doc.get("size") or 0),
        status=VOLUME_STATUSES.get(str(doc.get("status") or ""), "unknown"),
        instance_id=str(attached.get("server_id") or ""),
        device_paths=paths,
        tags={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
        raw=dict(doc),
    )


def choose_flavor(flavors: Sequence[Mapping[str, Any]], cpu: int, memory: int) -> str:
    """The id of the smallest flavor (vCPUs, then RAM, then disk) with ``cpu`` vCPUs and ``memory`` MiB."""
    fitting = [f for f in flavors if int(f.get("vcpus") or 0) >= cpu and int(f.get("ram") or 0) >= memory]
    if not fitting:
        raise ProviderError(
            f"openstack: no flavor has {cpu} vCPUs and {memory} MiB ({len(flavors)} flavors offered)",
            code="flavor",
        )
    best = min(
        fitting, key=lambda f: (int(f["vcpus"]), int(f["ram"]), int(f.get("disk") or 0), str(f["name"]))
    )
    return str(best["id"])


def _server_call(method: str, server_id: str, **kwargs: Any) -> Callable[[Connection], object]:
    """A worker-thread call of ``conn.compute.<method>(server_id, **kwargs)``."""

    def work(conn: Connection) -> object:
        return getattr(conn.compute, method)(server_id, **kwargs)

    return work


def _string(runtime: Mapping[str, Any], key: str, default: str = "") -> str:
    value = runtime.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ProviderError(f"openstack runtime: {key} must be a string", code="config")
    return value


def _number(runtime: Mapping[str, Any], key: str, default: float) -> float:
    value = runtime.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProviderError(
            f"openstack runtime: {key} must be a positive number, got {value!r}", code="config"
        )
    return float(value)


class OpenStackProvider(OpenStackPorts):
    """The ``openstack`` provider (entry point ``pitrix.providers: openstack``)."""

    name: ClassVar[str] = "openstack"

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        network: str = "",
        key_name: str = "",
        ssh_port: int = 22,
        attempts: int = 5,
        wait_timeout: float = 600.0,
        label: str = "",
    ) -> None:
        self._connect = connect  # credentials stay inside this closure and the SDK's session
        self._conn: Connection | None = None
        self._connecting = threading.Lock()
        self._flavors: list[dict[str, Any]] | None = None
        self.network = network
        self.key_name = key_name
        self.ssh_port = ssh_port
        self.attempts = attempts
        self.wait_timeout = wait_timeout
        self._log = get_logger("pitrix.providers.openstack", cloud=label)

    @classmethod
    def from_runtime(cls, runtime: Mapping[str, Any]) -> OpenStackProvider:
        """Build from a runtime definition: either ``cloud`` (a clouds.yaml entry, read as the
        ``openstack`` CLI reads it) or ``auth_url``, ``username``, ``password`` and optionally
        ``project_name``, ``user_domain_name``, ``project_domain_name``, ``region``."""
        cloud = _string(runtime, "cloud")
        region = _string(runtime, "region") or _string(runtime, "zone")
        timeout = _number(runtime, "timeout", 30.0)
        if cloud:

            def connect() -> Connection:
                return openstack.connect(cloud=cloud, region_name=region or None, api_timeout=timeout)

            label = cloud
        else:
            missing = [key for key in AUTH_KEYS if not runtime.get(key)]
            if missing:
                raise ProviderError(
                    f"openstack runtime: missing {', '.join(missing)} (or name a clouds.yaml entry in cloud)",
                    code="config",
                )
            auth = {
                "auth_url": _string(runtime, "auth_url"),
                "username": _string(runtime, "username"),
                "password": _string(runtime, "password"),
                "project_name": _string(runtime, "project_name"),
                "user_domain_name": _string(runtime, "user_domain_name", "Default"),
                "project_domain_name": _string(runtime, "project_domain_name", "Default"),
            }
            if not auth["auth_url"].startswith(("http://", "https://")):
                raise ProviderError(
                    f"openstack runtime: auth_url must be http(s)://..., got {auth['auth_url']!r}",
                    code="config",
                )

            def connect() -> Connection:
                return Connection(
                    auth={k: v for k, v in auth.items() if v},
                    auth_type="password",
                    region_name=region or None,
                    api_timeout=timeout,
                )

            label = auth["auth_url"]
        ssh_port = runtime.get("ssh_port", 22)
        if not isinstance(ssh_port, int) or isinstance(ssh_port, bool) or not 0 < ssh_port < 65536:
            raise ProviderError(
                f"openstack runtime: ssh_port must be a TCP port, got {ssh_port!r}", code="config"
            )
        return cls(
            connect,
            network=_string(runtime, "network"),
            key_name=_string(runtime, "key_name"),
            ssh_port=ssh_port,
            attempts=int(_number(runtime, "attempts", 5)),
            wait_timeout=_number(runtime, "wait_timeout", 600.0),
            label=label,
        )

    # -- calls -------------------------------------------------------------------------------------

    async def _sdk(self, action: str, work: Callable[[Connection], T], *, idempotent: bool = True) -> T:
        """``work(connection)`` in a worker thread; errors become ``ProviderError``, and the call is
        repeated as ``with_retries`` allows (a call that is not ``idempotent`` only when Nova
        certainly did nothing)."""

        def run() -> T:
            with self._connecting:  # worker threads must not each open a connection
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
            return work(conn)

        async def once() -> T:
            try:
                return await asyncio.to_thread(run)
            except Exception as exc:
                raise to_provider_error(action, exc) from exc

        return await with_retries(
            once, action=action, attempts=self.attempts, log=self._log, idempotent=idempotent
        )

    async def import_key_pair(self, name: str, public_key: str) -> str:
        """Nova key pairs are named by their name: look it up, create it from ``public_key`` if absent."""

        def ensure(conn: Connection) -> str:
            if conn.compute.find_keypair(name) is None:
                conn.compute.create_keypair(name=name, public_key=public_key)
            return name

        return await self._sdk("import_key_pair", ensure)

    async def host_keys(self, instance: Instance) -> list[str]:
        """The host keys cloud-init printed on the server's console (``os-getConsoleOutput``): Nova
        describes none.

        Empty while the console has none yet (still booting: Nova answers 409) or at all.
        """

        def work(conn: Connection) -> str:
            url = f"/servers/{quote(instance.instance_id, safe='')}/action"
            response = conn.compute.post(url, json={"os-getConsoleOutput": {"length": None}})
            if response.status_code in (404, 409):
                return ""
            sdk_exceptions.raise_from_response(response)
            return str(response.json().get("output") or "")

        return host_keys_from_console(await self._sdk("get console output", work))

    async def _servers(self, name_regex: str | None = None) -> list[Instance]:
        """Every page of ``GET /servers/detail``, as Nova's JSON.

        Through the SDK's authenticated compute adapter but without its resource objects: building
        and flattening those costs about 15 ms of CPU per server, which made a lookup of a large
        cluster take seconds.
        """
        params: dict[str, Any] | None = {"name": name_regex} if name_regex else None

        def work(conn: Connection) -> list[dict[str, Any]]:
            servers: list[dict[str, Any]] = []
            url: str | None = "/servers/detail"
            query = params
            while url:
                response = conn.compute.get(url, params=query)
                sdk_exceptions.raise_from_response(response)
                body = response.json()
                servers.extend(body.get("servers") or [])
                links = [
                    link.get("href") for link in body.get("servers_links") or [] if link.get("rel") == "next"
                ]
                url, query = (links[0], None) if links else (None, None)
            return servers

        servers = await self._sdk("list servers", work)
        return [to_instance(s, self.ssh_port) for s in servers]

    async def _by_ids(self, instance_ids: list[str]) -> dict[str, Instance]:
        """The servers with these ids that exist (a deleted one is absent)."""
        wanted = set(instance_ids)
        if len(wanted) > 3:  # one list beats many gets
            return {i.instance_id: i for i in await self._servers() if i.instance_id in wanted}

        def get(iid: str) -> Callable[[Connection], dict[str, Any] | None]:
            def work(conn: Connection) -> dict[str, Any] | None:
                response = conn.compute.get(f"/servers/{quote(iid, safe='')}")
                if response.status_code == 404:
                    return None
                sdk_exceptions.raise_from_response(response)
                return dict(response.json()["server"])

            return work

        found = {}
        for iid in wanted:
            server = await self._sdk("get server", get(iid))
            if server is not None:
                found[iid] = to_instance(server, self.ssh_port)
        return found

    async def _flavor_for(self, cpu: int, memory: int) -> str:
        if self._flavors is None:
            self._flavors = await self._sdk(
                "list flavors", lambda c: [f.to_dict() for f in c.compute.flavors(details=True)]
            )
        return choose_flavor(self._flavors, cpu, memory)

    # -- volumes (Cinder, attached through Nova) ------------------------------------------------------

    async def describe_volumes(
        self, *, volume_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Volume]:
        """Every page of ``GET /volumes/detail`` (raw JSON, as servers are listed), filtered here."""
        if volume_ids is not None and not volume_ids:
            return []

        def work(conn: Connection) -> list[dict[str, Any]]:
            volumes: list[dict[str, Any]] = []
            url: str | None = "/volumes/detail"
            while url:
                response = conn.block_storage.get(url)
                sdk_exceptions.raise_from_response(response)
                body = response.json()
                volumes.extend(body.get("volumes") or [])
                links = [k.get("href") for k in body.get("volumes_links") or [] if k.get("rel") == "next"]
                url = links[0] if links else None
            return volumes

        wanted = set(volume_ids) if volume_ids is not None else None
        return [
            v
            for v in map(to_volume, await self._sdk("list volumes", work))
            if v.status != "deleted"
            and (wanted is None or v.volume_id in wanted)
            and (not name_prefix or v.name.startswith(name_prefix))
        ]

    async def _volume(self, volume_id: str) -> Volume | None:
        def work(conn: Connection) -> dict[str, Any] | None:
            response = conn.block_storage.get(f"/volumes/{quote(volume_id, safe='')}")
            if response.status_code == 404:
                return None
            sdk_exceptions.raise_from_response(response)
            return dict(response.json()["volume"])

        doc = await self._sdk("get volume", work)
        volume = to_volume(doc) if doc is not None else None
        return volume if volume is not None and volume.status != "deleted" else None

    async def _wait_volume(
        self, volume_id: str, arrived: Callable[[Volume | None], bool], what: str
    ) -> Volume | None:
        last: list[Volume | None] = [None]

        async def check() -> bool | None:
            last[0] = await self._volume(volume_id)
            return True if arrived(last[0]) else None

        await wait_for(check, timeout=self.wait_timeout, what=f"openstack volume {volume_id} {what}")
        return last[0]

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        """``POST /volumes`` (never repeated blindly: Cinder has no client token; the step looks the
        name up first), then wait until it is available."""
        body = {
            "volume": {
                "size": spec.size,
                "name": spec.name,
                "metadata": {str(k): str(v) for k, v in spec.tags.items()},
            }
        }
        if spec.snapshot_id:  # backup: the volume starts as a copy of the snapshot
            body["volume"]["snapshot_id"] = spec.snapshot_id

        def work(conn: Connection) -> str:
            response = conn.block_storage.post("/volumes", json=body)
            sdk_exceptions.raise_from_response(response)
            return str(response.json()["volume"]["id"])

        volume_id = await self._sdk("create volume", work, idempotent=False)
        self._log.info("openstack.volume_created", volume_id=volume_id, name=spec.name, size=spec.size)
        made = await self._wait_volume(
            volume_id, lambda v: v is not None and v.status == "available", "to become available"
        )
        if made is None:
            raise ProviderError(f"openstack: volume {volume_id} ({spec.name}) vanished")
        return made

    async def attach_volume(self, volume_id: str, instance_id: str) -> Volume:
        volume = attachable("openstack", await self._volume(volume_id), volume_id, instance_id, "404")
        if volume.status == "pending" and not volume.instance_id:  # being created, or attached
            settled = await self._wait_volume(
                volume_id, lambda v: v is None or v.status != "pending", "to settle"
            )
            volume = attachable("openstack", settled, volume_id, instance_id, "404")
        if not volume.instance_id and volume.status == "available":
            url = f"/servers/{quote(instance_id, safe='')}/os-volume_attachments"
            body = {"volumeAttachment": {"volumeId": volume_id}}

            def work(conn: Connection) -> None:
                sdk_exceptions.raise_from_response(conn.compute.post(url, json=body))

            await self._sdk("attach volume", work, idempotent=False)
            self._log.info("openstack.volume_attached", volume_id=volume_id, instance_id=instance_id)
        attached = await self._wait_volume(
            volume_id,
            lambda v: v is not None and v.status == "in-use" and v.instance_id == instance_id,
            f"to be attached to {instance_id}",
        )
        assert attached is not None
        return attached

    async def detach_volume(self, volume_id: str) -> None:
        volume = await self._volume(volume_id)
        if volume is None or not volume.instance_id:
            return
        url = (
            f"/servers/{quote(volume.instance_id, safe='')}/os-volume_attachments/{quote(volume_id, safe='')}"
        )

        def work(conn: Connection) -> None:
            response = conn.compute.delete(url)
            if response.status_code != 404:  # detached meanwhile
                sdk_exceptions.raise_from_response(response)

        await self._sdk("detach volume", work)
        self._log.info("openstack.volume_detached", volume_id=volume_id, instance_id=volume.instance_id)
        await self._wait_volume(volume_id, lambda v: v is None or v.status == "available", "to be detached")

    async def delete_volumes(self, volume_ids: list[str]) -> None:
        existing = await self.describe_volumes(volume_ids=volume_ids) if volume_ids else []
        with_snapshots = {s.volume_id for s in await self.describe_snapshots()} if existing else set()
        for volume in existing:
            await self.detach_volume(volume.volume_id)
            url = f"/volumes/{quote(volume.volume_id, safe='')}"

            def work(conn: Connection, url: str = url) -> None:
                response = conn.block_storage.delete(url)
                if response.status_code != 404:
                    sdk_exceptions.raise_from_response(response)

            if volume.volume_id in with_snapshots:  # backup: see _keep_for_snapshots
                await self._keep_for_snapshots(volume.volume_id)
                continue
            await self._sdk("delete volume", work)
            self._log.info("openstack.volume_deleted", volume_id=volume.volume_id)
        for volume in existing:
            await self._wait_volume(
                volume.volume_id,
                lambda v: v is None or v.tags.get(KEPT_FOR_SNAPSHOTS) == "1",
                "to be deleted",
            )

    # -- snapshots (Cinder; backup) -----------------------------------------------------------------
    #
    # Cinder refuses to delete a volume that has snapshots, and a backup's snapshots outlive the
    # cluster whose volumes they were taken of. So a volume deleted while it has snapshots is kept,
    # detached and marked (metadata ``pitrix:kept-for-snapshots``), and goes with its last snapshot.

    async def _keep_for_snapshots(self, volume_id: str) -> None:
        url = f"/volumes/{quote(volume_id, safe='')}/metadata"
        body = {"metadata": {KEPT_FOR_SNAPSHOTS: "1"}}

        def work(conn: Connection) -> None:
            sdk_exceptions.raise_from_response(conn.block_storage.post(url, json=body))

        await self._sdk("mark volume", work)
        self._log.info("openstack.volume_kept_for_snapshots", volume_id=volume_id)

    async def create_snapshot(self, volume_id: str, name: str, tags: Mapping[str, str]) -> Snapshot:
        """``POST /snapshots`` (``force``: the volume is usually in use; Cinder before 3.66 asks
        for it), then wait until it is available. Not a lookup: the step looks the name up first."""
        body = {
            "snapshot": {
                "volume_id": volume_id,
                "name": name,
                "force": True,
                "metadata": {str(k): str(v) for k, v in tags.items()},
            }
        }

        def work(conn: Connection) -> str:
            response = conn.block_storage.post("/snapshots", json=body)
            sdk_exceptions.raise_from_response(response)
            return str(response.json()["snapshot"]["id"])

        snapshot_id = await self._sdk("create snapshot", work, idempotent=False)
        self._log.info("openstack.snapshot_created", snapshot_id=snapshot_id, volume_id=volume_id, name=name)
        last: list[Snapshot] = []

        async def available() -> bool | None:
            last[:] = await self.describe_snapshots(snapshot_ids=[snapshot_id])
            if not last:
                raise ProviderError(f"openstack: snapshot {snapshot_id} vanished", code="404")
            if last[0].status == "error":
                raise ProviderError(f"openstack: snapshot {snapshot_id} of {volume_id} failed", code="error")
            return True if last[0].status == "available" else None

        await wait_for(available, timeout=self.wait_timeout, what=f"openstack snapshot {snapshot_id}")
        return last[0]

    async def describe_snapshots(
        self, *, snapshot_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Snapshot]:
        """Every page of ``GET /snapshots/detail``, filtered here (Cinder matches names exactly)."""
        if snapshot_ids is not None and not snapshot_ids:
            return []

        def work(conn: Connection) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            url: str | None = "/snapshots/detail"
            while url:
                response = conn.block_storage.get(url)
                sdk_exceptions.raise_from_response(response)
                body = response.json()
                found.extend(body.get("snapshots") or [])
                links = [k.get("href") for k in body.get("snapshots_links") or [] if k.get("rel") == "next"]
                url = links[0] if links else None
            return found

        wanted = set(snapshot_ids) if snapshot_ids is not None else None
        return [
            s
            for s in map(to_snapshot, await self._sdk("list snapshots", work))
            if s.status != "deleted"
            and (wanted is None or s.snapshot_id in wanted)
            and (not name_prefix or s.name.startswith(name_prefix))
        ]

    async def delete_snapshots(self, snapshot_ids: list[str]) -> None:
        existing = await self.describe_snapshots(snapshot_ids=snapshot_ids) if snapshot_ids else []
        for snapshot in existing:
            url = f"/snapshots/{quote(snapshot.snapshot_id, safe='')}"

            def work(conn: Connection, url: str = url) -> None:
                response = conn.block_storage.delete(url)
                if response.status_code != 404:
                    sdk_exceptions.raise_from_response(response)

            await self._sdk("delete snapshot", work)
            self._log.info("openstack.snapshot_deleted", snapshot_id=snapshot.snapshot_id)
        gone = {s.snapshot_id for s in existing}

        async def deleted() -> bool | None:
            left = {s.snapshot_id for s in await self.describe_snapshots(snapshot_ids=sorted(gone))}
            return None if left else True

        if gone:
            await wait_for(deleted, timeout=self.wait_timeout, what="openstack snapshots to be deleted")
        # Volumes kept only for these snapshots go with their last one.
        sources = {s.volume_id for s in existing}
        kept = [
            v.volume_id
            for v in await self.describe_volumes(volume_ids=sorted(sources))
            if v.tags.get(KEPT_FOR_SNAPSHOTS) == "1"
        ]
        if kept:
            remaining = {s.volume_id for s in await self.describe_snapshots()}
            doomed = [vid for vid in kept if vid not in remaining]
            if doomed:
                await self.delete_volumes(doomed)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    # -- instances ---------------------------------------------------------------------------------

    async def run_instances(self, specs: list[InstanceSpec]) -> list[Instance]:
        """Create the specs' servers; a name that already has a live server gets that one back."""
        if not all(spec.name for spec in specs):
            raise ProviderError("openstack: an instance needs a name", code="spec")
        flavors = [
            await (
                self._flavor_named(spec.instance_type)
                if spec.instance_type
                else self._flavor_for(spec.cpu, spec.memory)
            )
            for spec in specs
        ]
        names = "|".join(re.escape(spec.name) for spec in specs)
        existing: dict[str, Instance] = {}
        for server in await self._servers(f"^(?:{names})$") if specs else []:
            if server.status != "terminated":
                existing.setdefault(server.name, server)
        limit = asyncio.Semaphore(RUN_CONCURRENCY)

        async def run(spec: InstanceSpec, flavor: str) -> Instance:
            if spec.name in existing:
                self._log.info(
                    "openstack.run_found", instance_id=existing[spec.name].instance_id, name=spec.name
                )
                return existing[spec.name]
            async with limit:
                return await self._create(spec, flavor)

        results = await asyncio.gather(
            *(run(spec, flavor) for spec, flavor in zip(specs, flavors, strict=True)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return cast(list[Instance], results)

    async def _create(self, spec: InstanceSpec, flavor: str) -> Instance:
        attrs: dict[str, Any] = {
            "name": spec.name,
            "image_id": spec.image,
            "flavor_id": flavor,
            "metadata": {str(k): str(v) for k, v in spec.tags.items()},
        }
        if spec.userdata:
            attrs["user_data"] = base64.b64encode(spec.userdata.encode()).decode()
        if spec.key_pair or self.key_name:
            attrs["key_name"] = spec.key_pair or self.key_name
        if spec.network or self.network:
            attrs["networks"] = [{"uuid": spec.network or self.network}]
        # Not idempotent: Nova has no client token, and a lost answer may hide a created server.
        server = await self._sdk(
            f"create server {spec.name}",
            lambda c: c.compute.create_server(**attrs).to_dict(),
            idempotent=False,
        )
        self._log.info("openstack.run", instance_id=server["id"], name=spec.name, flavor=flavor)
        return Instance(
            instance_id=str(server["id"]),
            name=spec.name,
            status="pending",
            ssh_port=self.ssh_port,
            tags=dict(attrs["metadata"]),
            raw=server,
        )

    async def describe_instances(
        self,
        *,
        instance_ids: list[str] | None = None,
        name_prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Instance]:
        """Live servers by id, by name prefix and/or by metadata tags (all must match)."""
        if instance_ids is not None and not instance_ids:
            return []
        servers = await self._servers("^" + re.escape(name_prefix) if name_prefix else None)
        wanted = set(instance_ids) if instance_ids is not None else None
        return [
            s
            for s in servers
            if s.status != "terminated"
            and (wanted is None or s.instance_id in wanted)
            and (not name_prefix or s.name.startswith(name_prefix))
            and all(s.tags.get(k) == v for k, v in (tags or {}).items())
        ]

    async def _settle(
        self, action: str, instance_ids: list[str], done: Callable[[Instance | None], bool]
    ) -> None:
        async def settled() -> bool | None:
            found = await self._by_ids(instance_ids)
            return True if all(done(found.get(iid)) for iid in instance_ids) else None

        await wait_for(settled, timeout=self.wait_timeout, what=f"openstack {action} {instance_ids}")

    async def terminate_instances(self, instance_ids: list[str]) -> None:
        """Delete and wait until gone; ids already gone (or never seen) are skipped."""
        if not instance_ids:
            return
        current = await self._by_ids(instance_ids)
        todo = [iid for iid in instance_ids if iid in current]
        for iid in todo:
            await self._sdk("delete server", _server_call("delete_server", iid, ignore_missing=True))
        self._log.info("openstack.delete", instance_ids=todo, skipped=len(instance_ids) - len(todo))
        await self._settle("delete", todo, lambda s: s is None)

    async def stop_instances(self, instance_ids: list[str]) -> None:
        await self._power("stop", instance_ids, "ACTIVE", "SHUTOFF")

    async def start_instances(self, instance_ids: list[str]) -> None:
        await self._power("start", instance_ids, "SHUTOFF", "ACTIVE")

    async def _power(self, action: str, instance_ids: list[str], from_status: str, to_status: str) -> None:
        """``os-<action>`` on servers in ``from_status`` (others left alone); wait for ``to_status``."""
        if not instance_ids:
            return
        current = await self._by_ids(instance_ids)
        todo = [
            iid
            for iid in instance_ids
            if iid in current
            and current[iid].raw.get("status") == from_status
            and not task_state(current[iid].raw)
        ]
        for iid in todo:
            await self._sdk(f"{action} server", _server_call(f"{action}_server", iid))
        self._log.info(f"openstack.{action}", instance_ids=todo, skipped=len(instance_ids) - len(todo))
        present = [iid for iid in instance_ids if iid in current]
        await self._settle(
            action,
            present,
            lambda s: s is None or (s.raw.get("status") == to_status and not task_state(s.raw)),
        )

    async def wait_running(self, instance_ids: list[str], timeout: float) -> list[Instance]:
        """Poll until all are ACTIVE; a missing, deleted, stopped or ERROR one fails at once."""
        return await wait_all_running(
            self._by_ids,
            instance_ids,
            timeout=timeout,
            cloud="openstack",
            halted=lambda i: i.raw.get("status") in ("ERROR", "SHUTOFF"),
        )

    # -- resize ----------------------------------------------------------------------------------
    # Nova resizes to another flavor (``resize`` then ``confirmResize``); a running server is
    # powered off and on by Nova itself, so the guest reboots: not online for the app, and the
    # runtime stops it first. Cinder extends a volume in place; with volume API 3.42 an attached
    # one too (``in-use`` extend), which the guest sees without a reboot.

    online_resize: ClassVar[bool] = False
    online_volume_growth: ClassVar[bool] = True

    async def _flavor_named(self, name: str) -> str:
        if self._flavors is None:
            await self._flavor_for(1, 1)
        assert self._flavors is not None
        for flavor in self._flavors:
            if name in (str(flavor.get("name")), str(flavor.get("id"))):
                return str(flavor["id"])
        raise ProviderError(f"openstack: no flavor named {name!r}", code="flavor")

    async def resize_instance(
        self, instance_id: str, *, cpu: int, memory: int, instance_type: str = ""
    ) -> None:
        flavor = await (self._flavor_named(instance_type) if instance_type else self._flavor_for(cpu, memory))
        current = (await self._by_ids([instance_id])).get(instance_id)
        if current is None:
            raise ProviderError(f"openstack: server {instance_id} not found", code="404")
        status = str(current.raw.get("status") or "")
        if status == "VERIFY_RESIZE":  # resized before a crash, not yet confirmed
            await self._confirm_resize(instance_id)
            return
        if str((current.raw.get("flavor") or {}).get("id") or "") == flavor:
            return
        await self._sdk(
            "resize server", _server_call("resize_server", instance_id, flavor=flavor), idempotent=False
        )
        self._log.info("openstack.resize", instance_id=instance_id, flavor=flavor)
        await self._settle(
            "resize", [instance_id], lambda s: s is None or s.raw.get("status") in ("VERIFY_RESIZE", "ERROR")
        )
        await self._confirm_resize(instance_id)

    async def _confirm_resize(self, instance_id: str) -> None:
        await self._sdk("confirm resize", _server_call("confirm_server_resize", instance_id))
        await self._settle(
            "confirm resize",
            [instance_id],
            lambda s: s is None or (s.raw.get("status") in ("ACTIVE", "SHUTOFF") and not task_state(s.raw)),
        )
        after = (await self._by_ids([instance_id])).get(instance_id)
        if after is None:
            raise ProviderError(f"openstack: server {instance_id} vanished while resized", code="404")

    async def grow_volume(self, volume_id: str, size: int) -> Volume:
        volume = await self._volume(volume_id)
        if volume is None:
            raise ProviderError(f"openstack: volume {volume_id} not found", code="404")
        if volume.size == size:
            return volume
        url = f"/volumes/{quote(volume_id, safe='')}/action"

        def work(conn: Connection) -> None:
            response = conn.block_storage.post(
                url,
                json={"os-extend": {"new_size": size}},
                headers={"OpenStack-API-Version": "volume 3.42"},  # in-use volumes too
            )
            sdk_exceptions.raise_from_response(response)

        await self._sdk("extend volume", work, idempotent=False)
        self._log.info("openstack.volume_extended", volume_id=volume_id, size=size)
        grown = await self._wait_volume(
            volume_id,
            lambda v: v is None or (v.size == size and v.status in ("available", "in-use")),
            f"to reach {size} GiB",
        )
        if grown is None:
            raise ProviderError(f"openstack: volume {volume_id} vanished while extended", code="404")
        return grown
