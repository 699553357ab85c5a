"""The OpenStack face of the simulator's volumes: Cinder v3 (volumes) and Nova's
``os-volume_attachments``, over the same volume book the QingCloud API uses.

Cinder statuses come from the volume's status and transition: a volume being attached is
``attaching``, one being detached ``detaching``, one being deleted ``deleting``; a deleted one is
gone (404). Metadata, which QingCloud volumes lack, is kept here by volume id.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.errors import BAD_STATUS, INVALID_REQUEST, NOT_FOUND, ApiError
from simulator.snapshots import SimSnapshot
from simulator.volumes import SimVolume

if TYPE_CHECKING:
    from simulator.openstack_api import OpenStackApi

CINDER_STATUS = {
    ("pending", "creating"): "creating",
    ("available", "attaching"): "attaching",
    ("available", "deleting"): "deleting",
    ("in-use", "detaching"): "detaching",
}
MAX_SIZE = 65536  # GiB
EXTEND_IN_USE = "3.42"  # the volume API microversion that extends attached volumes


def refused(status: int, message: str) -> ApiError:
    """An error the OpenStack face answers with ``status`` in Nova's shape (its guard maps the code)."""
    return ApiError({404: NOT_FOUND, 409: BAD_STATUS}.get(status, INVALID_REQUEST), message)


def cinder_status(volume: SimVolume) -> str:
    return CINDER_STATUS.get((volume.status, volume.transition_status), volume.status)


class OpenStackVolumes:
    """Routes and handlers; authentication and Nova's error bodies come from the ``OpenStackApi``."""

    def __init__(self, api: OpenStackApi) -> None:
        self.api = api
        self.fleet = api.fleet
        self._metadata: dict[str, dict[str, str]] = {}
        self._snapshot_metadata: dict[str, dict[str, str]] = {}

    def routes(self, nova: str) -> list[web.RouteDef]:
        a = self.api._authed
        cinder = "/volume/v3/{project_id}"
        return [
            web.get("/volume", self.versions),
            web.get("/volume/", self.versions),
            web.get("/volume/v3", self.version),
            web.get("/volume/v3/", self.version),
            web.get(cinder, self.version),
            web.get(cinder + "/", self.version),
            web.get(cinder + "/volumes", a(self.list_volumes)),
            web.get(cinder + "/volumes/detail", a(self.list_volumes)),
            web.post(cinder + "/volumes", a(self.create_volume)),
            web.get(cinder + "/volumes/{volume_id}", a(self.get_volume)),
            web.delete(cinder + "/volumes/{volume_id}", a(self.delete_volume)),
            web.get(nova + "/servers/{server_id}/os-volume_attachments", a(self.list_attachments)),
            web.post(nova + "/servers/{server_id}/os-volume_attachments", a(self.attach)),
            web.delete(nova + "/servers/{server_id}/os-volume_attachments/{volume_id}", a(self.detach)),
            web.post(cinder + "/volumes/{volume_id}/metadata", a(self.update_metadata)),
            web.get(cinder + "/snapshots", a(self.list_snapshots)),
            web.get(cinder + "/snapshots/detail", a(self.list_snapshots)),
            web.post(cinder + "/snapshots", a(self.create_snapshot)),
            web.get(cinder + "/snapshots/{snapshot_id}", a(self.get_snapshot)),
            web.delete(cinder + "/snapshots/{snapshot_id}", a(self.delete_snapshot)),
            web.post(cinder + "/volumes/{volume_id}/action", a(self.volume_action)),
        ]

    # -- discovery ---------------------------------------------------------------------------------

    def _doc(self, request: web.Request) -> dict[str, Any]:
        return {
            "id": "v3.0",
            "status": "CURRENT",
            "version": EXTEND_IN_USE,
            "min_version": "3.0",
            "updated": "2023-01-01T00:00:00Z",
            "links": [{"rel": "self", "href": f"{request.scheme}://{request.host}/volume/v3/"}],
        }

    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [self._doc(request)]}, status=300)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self._doc(request)})

    # -- Cinder ------------------------------------------------------------------------------------

    def _volume(self, volume_id: str) -> SimVolume:
        found = [v for v in self.fleet.volumes.all() if v.volume_id == volume_id and v.status != "deleted"]
        if not found:
            raise refused(404, f"Volume {volume_id} could not be found.")
        return found[0]

    def _doc_of(self, request: web.Request, volume: SimVolume) -> dict[str, Any]:
        attachments = []
        if volume.instance_id and volume.status == "in-use":
            attachments.append(
                {
                    "id": volume.volume_id,
                    "attachment_id": uuid.uuid5(
                        uuid.NAMESPACE_URL, volume.volume_id + volume.instance_id
                    ).hex,
                    "volume_id": volume.volume_id,
                    "server_id": volume.instance_id,
                    "device": volume.device,
                    "host_name": None,
                    "attached_at": volume.status_time,
                }
            )
        base = f"{request.scheme}://{request.host}/volume/v3/{request.match_info.get('project_id', '')}"
        return {
            "id": volume.volume_id,
            "name": volume.name,
            "description": None,
            "size": volume.size,
            "status": cinder_status(volume),
            "attachments": attachments,
            "availability_zone": self.api.zone,
            "bootable": "false",
            "encrypted": False,
            "multiattach": False,
            "volume_type": "__DEFAULT__",
            "metadata": dict(self._metadata.get(volume.volume_id, {})),
            "created_at": volume.create_time,
            "updated_at": volume.status_time,
            "links": [{"rel": "self", "href": f"{base}/volumes/{volume.volume_id}"}],
        }

    async def list_volumes(self, request: web.Request) -> web.Response:
        query = request.query
        name = query.get("name")
        volumes = [v for v in self.fleet.volumes.all() if v.status != "deleted"]  # oldest first
        if name is not None:
            volumes = [v for v in volumes if v.name == name]
        marker = query.get("marker")
        if marker:
            ids = [v.volume_id for v in volumes]
            if marker not in ids:
                raise refused(400, f"marker [{marker}] not found")
            volumes = volumes[ids.index(marker) + 1 :]
        limit_text = query.get("limit", "1000")
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise refused(400, f"Invalid input: limit {limit_text!r} must be a positive integer")
        limit = int(limit_text)
        page = volumes[:limit]
        detailed = request.path.endswith("/detail")
        body: dict[str, Any] = {
            "volumes": [
                self._doc_of(request, v) if detailed else {"id": v.volume_id, "name": v.name, "links": []}
                for v in page
            ]
        }
        if len(volumes) > limit:
            next_url = request.url.update_query(marker=page[-1].volume_id, limit=str(limit))
            body["volumes_links"] = [{"rel": "next", "href": str(next_url)}]
        return web.json_response(body)

    async def get_volume(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"volume": self._doc_of(request, self._volume(request.match_info["volume_id"]))}
        )

    async def create_volume(self, request: web.Request) -> web.Response:
        body = await self.api._body(request, "volume")
        size = body.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
            raise refused(400, f"Invalid input for field/attribute size: must be 1 to {MAX_SIZE} GiB")
        name = body.get("name") or ""
        if not isinstance(name, str) or len(name) > 255:
            raise refused(400, "Invalid input for field/attribute name.")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 255 and len(v) <= 255
            for k, v in metadata.items()
        ):
            raise refused(400, "Invalid input for field/attribute metadata.")
        source = body.get("snapshot_id")
        if source:  # backup: a volume from a snapshot (at least the snapshot's size)
            volume_id = self._volume_from_snapshot(str(source), name, size)
        else:
            [volume_id], _ = self.fleet.create_volumes(name, size, 1)
        self._metadata[volume_id] = dict(metadata)
        return web.json_response({"volume": self._doc_of(request, self._volume(volume_id))}, status=202)

    async def delete_volume(self, request: web.Request) -> web.Response:
        volume = self._volume(request.match_info["volume_id"])
        self._refuse_with_snapshots(volume)
        if volume.status != "available" or volume.transition_status:
            raise refused(
                400,
                f"Invalid volume: Volume status must be available or error, but current status is: "
                f"{cinder_status(volume)}",
            )
        self.fleet.delete_volumes([volume.volume_id])
        self._metadata.pop(volume.volume_id, None)
        return web.Response(status=202)

    # -- Nova: attachments -------------------------------------------------------------------------

    @staticmethod
    def _attachment(volume: SimVolume) -> dict[str, Any]:
        return {
            "id": volume.volume_id,
            "serverId": volume.instance_id,
            "volumeId": volume.volume_id,
            "device": volume.device,
        }

    async def list_attachments(self, request: web.Request) -> web.Response:
        vm = self.api._vm(request.match_info["server_id"])
        attached = self.fleet.volumes.attached_to(vm.instance_id)
        return web.json_response({"volumeAttachments": [self._attachment(v) for v in attached]})

    async def attach(self, request: web.Request) -> web.Response:
        vm = self.api._vm(request.match_info["server_id"])
        body = await self.api._body(request, "volumeAttachment")
        volume_id = body.get("volumeId")
        if not isinstance(volume_id, str) or not volume_id:
            raise refused(400, "Invalid input for field/attribute volumeId.")
        volume = self._volume(volume_id)
        if volume.status != "available" or volume.transition_status:
            raise refused(
                400,
                f"Invalid volume: volume {volume_id} status must be 'available', is {cinder_status(volume)}",
            )
        self.fleet.attach_volumes([volume_id], vm.instance_id)  # the device name is taken at once
        return web.json_response({"volumeAttachment": self._attachment(volume)})

    async def detach(self, request: web.Request) -> web.Response:
        vm = self.api._vm(request.match_info["server_id"])
        volume = self._volume(request.match_info["volume_id"])
        if volume.instance_id != vm.instance_id:
            raise refused(404, f"volume_id not found: {volume.volume_id}")
        if volume.status != "in-use" or volume.transition_status:
            raise refused(409, f"Volume {volume.volume_id} is {cinder_status(volume)}, cannot detach now")
        self.fleet.detach_volumes([volume.volume_id], vm.instance_id)
        return web.Response(status=202)

    # -- Cinder snapshots (backup) -----------------------------------------------------------------

    def _refuse_with_snapshots(self, volume: SimVolume) -> None:
        """Cinder keeps a volume that has snapshots (its delete is refused, as Cinder refuses it)."""
        if any(s.volume_id == volume.volume_id and s.status != "deleted" for s in self.fleet.snapshots.all()):
            raise refused(
                400,
                "Invalid volume: Volume status must be available or error or error_restoring or "
                "error_extending or error_managing and must not be migrating, attached, belong to a "
                "group, have snapshots or be disassociated from snapshots after volume transfer.",
            )

    async def update_metadata(self, request: web.Request) -> web.Response:
        """``POST /volumes/{id}/metadata``: the items given are set, the others kept."""
        volume = self._volume(request.match_info["volume_id"])
        body = await self.api._body(request, "metadata")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in body.items()):
            raise refused(400, "Invalid input for field/attribute metadata.")
        merged = self._metadata.setdefault(volume.volume_id, {})
        merged.update(body)
        return web.json_response({"metadata": dict(merged)})

    def _volume_from_snapshot(self, snapshot_id: str, name: str, size: int) -> str:
        snapshot = self._snapshot(snapshot_id)
        if size < snapshot.size:
            raise refused(
                400,
                f"Invalid input received: Volume size '{size}'GB cannot be smaller than the snapshot "
                f"size {snapshot.size}GB. They must be >= original snapshot size.",
            )
        if snapshot.status != "available" or snapshot.transition_status:
            raise refused(
                400, "Invalid snapshot: Originating snapshot status must be one of 'available' values"
            )
        volume_id, _ = self.fleet.create_volume_from_snapshot(snapshot_id, name)
        return volume_id

    def _snapshot(self, snapshot_id: str) -> SimSnapshot:
        found = [
            s for s in self.fleet.snapshots.all() if s.snapshot_id == snapshot_id and s.status != "deleted"
        ]
        if not found:
            raise refused(404, f"Snapshot {snapshot_id} could not be found.")
        return found[0]

    def _snapshot_doc(self, snapshot: SimSnapshot) -> dict[str, Any]:
        status = {"creating": "creating", "deleting": "deleting"}.get(
            snapshot.transition_status, snapshot.status
        )
        return {
            "id": snapshot.snapshot_id,
            "name": snapshot.name,
            "description": None,
            "volume_id": snapshot.volume_id,
            "size": snapshot.size,
            "status": "creating" if status == "pending" else status,
            "metadata": dict(self._snapshot_metadata.get(snapshot.snapshot_id, {})),
            "created_at": snapshot.create_time,
            "updated_at": snapshot.status_time,
        }

    async def list_snapshots(self, request: web.Request) -> web.Response:
        snapshots = [s for s in self.fleet.snapshots.all() if s.status != "deleted"]  # oldest first
        name = request.query.get("name")
        if name is not None:
            snapshots = [s for s in snapshots if s.name == name]
        return web.json_response({"snapshots": [self._snapshot_doc(s) for s in snapshots]})

    async def get_snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"snapshot": self._snapshot_doc(self._snapshot(request.match_info["snapshot_id"]))}
        )

    async def create_snapshot(self, request: web.Request) -> web.Response:
        """``{"snapshot": {"volume_id", "name", "metadata", "force"}}``: an in-use volume only with
        ``force`` (Cinder's rule before microversion 3.66)."""
        body = await self.api._body(request, "snapshot")
        volume_id = body.get("volume_id")
        if not isinstance(volume_id, str) or not volume_id:
            raise refused(400, "Invalid input for field/attribute volume_id.")
        volume = self._volume(volume_id)
        if volume.status == "in-use" and body.get("force") not in (True, "true", "True"):
            raise refused(
                400,
                f"Invalid volume: Volume {volume_id} status must be available, "
                "but current status is: in-use.",
            )
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise refused(400, "Invalid input for field/attribute metadata.")
        [snapshot_id], _ = self.fleet.create_snapshots([volume_id], str(body.get("name") or ""))
        self._snapshot_metadata[snapshot_id] = {str(k): str(v) for k, v in metadata.items()}
        return web.json_response({"snapshot": self._snapshot_doc(self._snapshot(snapshot_id))}, status=202)

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        snapshot = self._snapshot(request.match_info["snapshot_id"])
        if snapshot.transition_status:
            raise refused(400, "Invalid snapshot: Snapshot status must be available or error")
        self.fleet.delete_snapshots([snapshot.snapshot_id])
        self._snapshot_metadata.pop(snapshot.snapshot_id, None)
        return web.Response(status=202)

    # -- extend ------------------------------------------------------------------------------------

    async def volume_action(self, request: web.Request) -> web.Response:
        """``os-extend`` (``new_size``, grow only): an ``available`` volume, or an ``in-use`` one when
        the request asks for microversion 3.42 or later, as Cinder does."""
        volume = self._volume(request.match_info["volume_id"])
        try:
            body = await request.json()
        except ValueError:
            raise refused(400, "Malformed request body: not JSON") from None
        if (
            not isinstance(body, dict)
            or list(body) != ["os-extend"]
            or not isinstance(body["os-extend"], dict)
        ):
            raise refused(400, "Invalid volume action: only os-extend is supported here")
        size = body["os-extend"].get("new_size")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            raise refused(400, f"Invalid input: new_size {size!r} must be an integer in [1, {MAX_SIZE}]")
        if size <= volume.size:
            raise refused(
                400,
                "New size for extend must be greater than current size. "
                f"(current: {volume.size}, extended: {size}).",
            )
        status = cinder_status(volume)
        asked = request.headers.get("OpenStack-API-Version", "").removeprefix("volume").strip()
        in_use_allowed = _version(asked) >= _version(EXTEND_IN_USE)
        if not (status == "available" or (status == "in-use" and in_use_allowed)):
            needed = "available" + (" or in-use" if in_use_allowed else "")
            raise refused(400, f"Invalid volume: Volume status must be {needed} to extend (it is {status}).")
        self.fleet.resize_volumes([volume.volume_id], size, online=True)
        return web.Response(status=202)


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (3, 0)
