"""``QingCloudProvider``: the runtime's provider interface over the QingCloud API v1.

QingCloud has no client token and no waiters, so this class adds what the runtime needs on top:
lookups by exact name prefix (``search_word`` is a substring match), pagination, waiting with the
providers' shared backoff poll (``polling``), and terminate/stop/start that tolerate
instances already in the wanted state, so a step that is repeated after a crash does not fail.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import io
import secrets
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from pitrix.backoff import Backoff
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
from pitrix.providers.polling import wait_all_running, wait_for
from pitrix.providers.qingcloud.client import QingCloudClient
from pitrix.providers.qingcloud.vips import QingCloudVips

PAGE = 100  # QingCloud's largest page (and largest list of ids in one call)
LIVE_STATUSES = ("pending", "running", "stopped", "suspended")
GONE_STATUSES = frozenset({"terminated", "ceased"})
KNOWN_STATUSES: frozenset[str] = frozenset(
    {"pending", "running", "stopped", "suspended", "terminated", "ceased"}
)
RUNTIME_KEYS = ("endpoint", "zone", "access_key_id", "secret_access_key")
RUN_CONCURRENCY = 8  # RunInstances calls in flight at once: a large cluster should not earn throttling
# How jobs and instances are polled: 50 ms growing to 1 s, as QingCloud's own clients wait.
POLL = functools.partial(Backoff, 0.05, 1.0, factor=1.5)


BASE_VXNET = "vxnet-0"  # QingCloud's base network: instances of a runtime without a network join it
USERDATA_VALUE_LIMIT = 4096  # characters of an exec userdata_value (base64); beyond: a tar attachment
ATTACHMENT_LIMIT = 2 * 1024 * 1024  # bytes of an uploaded userdata archive


def runtime_vxnet(runtime: Mapping[str, Any]) -> str:
    """The runtime's vxnet: its ``network``, else the older settings AppCenter-profile apps read
    (``vxnet``, or the first of ``vxnets``), so what is published is where instances are; "" for
    none (then ``vxnet-0``)."""
    listed = runtime.get("vxnets")
    first = listed[0] if isinstance(listed, list) and listed else ""
    for value in (runtime.get("network"), runtime.get("vxnet"), first):
        if isinstance(value, str) and value:
            return value
    return ""


def boot_archive(script: bytes) -> bytes:
    """A gzipped tar holding ``etc/rc.local`` (mode 0700): the boot script in the form QingCloud
    takes beyond 4 KiB."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("etc")  # as /etc is: unpacking must not change it
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        info = tarfile.TarInfo("etc/rc.local")
        info.size, info.mode = len(script), 0o700
        archive.addfile(info, io.BytesIO(script))
    data = buffer.getvalue()
    if len(data) > ATTACHMENT_LIMIT:
        raise ProviderError(
            f"qingcloud: userdata archive is {len(data)} bytes, over the {ATTACHMENT_LIMIT} QingCloud takes",
            code="1100",
        )
    return data


def _indexed(name: str, values: Iterable[str]) -> dict[str, str]:
    """QingCloud's list parameters: ``name.1``, ``name.2``, ..."""
    return {f"{name}.{i}": value for i, value in enumerate(values, start=1)}


def _chunks(items: list[str], size: int = PAGE) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def host_key_lines(item: Mapping[str, Any]) -> list[str]:
    """The ``ssh_host_key`` lines of an instance's description (the simulator's field)."""
    return [line.strip() for line in str(item.get("ssh_host_key") or "").splitlines() if line.strip()]


def to_instance(item: Mapping[str, Any]) -> Instance:
    """An ``Instance`` from one ``instance_set`` entry."""
    status = str(item.get("status", "unknown"))
    vxnets = item.get("vxnets") or []
    private_ip = ""
    if vxnets and isinstance(vxnets[0], Mapping):
        private_ip = str(vxnets[0].get("private_ip") or "")
    # QingCloud tags are names; pitrix's key/value tags travel as "key=value" names.
    tags = dict(
        str(tag["tag_name"]).partition("=")[::2]
        for tag in item.get("tags") or []
        if isinstance(tag, Mapping) and "=" in str(tag.get("tag_name", ""))
    )
    return Instance(
        instance_id=str(item["instance_id"]),
        name=str(item.get("instance_name", "")),
        status=cast(InstanceStatus, status if status in KNOWN_STATUSES else "unknown"),
        private_ip=private_ip,
        ssh_port=int(item.get("ssh_port") or 22),  # the simulator reports its SSH port; QingCloud uses 22
        tags=tags,
        raw=dict(item),
    )


LIVE_VOLUME_STATUSES = ("pending", "available", "in-use", "suspended")
VOLUME_STATUSES: Mapping[str, VolumeStatus] = {
    "pending": "pending",
    "available": "available",
    "in-use": "in-use",
    "deleted": "deleted",
    "ceased": "deleted",
}


def to_volume(item: Mapping[str, Any]) -> Volume:
    """A ``Volume`` from one ``volume_set`` entry; the device QingCloud names is the guest's."""
    attached = item.get("instance") or {}
    if not isinstance(attached, Mapping):
        attached = {}
    device = str(attached.get("device") or "")
    return Volume(
        volume_id=str(item["volume_id"]),
        name=str(item.get("volume_name", "")),
        size=int(item.get("size") or 0),
        status=VOLUME_STATUSES.get(str(item.get("status", "")), "unknown"),
        instance_id=str(attached.get("instance_id") or ""),
        device_paths=(device,) if device else (),
        raw=dict(item),
    )


LIVE_SNAPSHOT_STATUSES = ("pending", "available", "suspended")
SNAPSHOT_STATUSES: Mapping[str, SnapshotStatus] = {
    "pending": "pending",
    "available": "available",
    "suspended": "error",
    "deleted": "deleted",
    "ceased": "deleted",
}


def to_snapshot(item: Mapping[str, Any]) -> Snapshot:
    """A ``Snapshot`` from one ``snapshot_set`` entry (the volume is its ``resource``)."""
    resource = item.get("resource") or {}
    if not isinstance(resource, Mapping):
        resource = {}
    status = SNAPSHOT_STATUSES.get(str(item.get("status", "")), "unknown")
    return Snapshot(
        snapshot_id=str(item["snapshot_id"]),
        name=str(item.get("snapshot_name", "")),
        volume_id=str(resource.get("resource_id") or ""),
        size=int(item.get("size") or 0),
        status=status,
        created=str(item.get("create_time") or ""),
        raw=dict(item),
    )


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A QingCloud key pair; ``private_key`` only in the answer to creating a generated one."""

    keypair_id: str
    name: str
    public_key: str
    encrypt_method: str
    instance_ids: tuple[str, ...] = ()
    private_key: str = dataclasses.field(default="", repr=False)


def to_key_pair(item: Mapping[str, Any]) -> KeyPair:
    return KeyPair(
        keypair_id=str(item["keypair_id"]),
        name=str(item.get("keypair_name", "")),
        public_key=str(item.get("pub_key", "")),
        encrypt_method=str(item.get("encrypt_method", "")),
        instance_ids=tuple(str(i) for i in item.get("instance_ids") or []),
    )


class QingCloudProvider(QingCloudVips):
    """The ``qingcloud`` provider (entry point ``pitrix.providers: qingcloud``)."""

    name: ClassVar[str] = "qingcloud"
    page_size: int = PAGE  # DescribeInstances page; QingCloud's largest is 100

    def __init__(
        self,
        endpoint: str,
        zone: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        timeout: float = 30.0,
        job_timeout: float = 600.0,
        network: str = "",
    ) -> None:
        for field, value in (
            ("endpoint", endpoint),
            ("zone", zone),
            ("access_key_id", access_key_id),
            ("secret_access_key", secret_access_key),
        ):
            if not isinstance(value, str) or not value:
                raise ProviderError(f"qingcloud runtime: {field} must be a non-empty string", code="config")
        self.zone = zone
        self.job_timeout = job_timeout
        self.network = network or BASE_VXNET  # the runtime's vxnet, for specs that name none
        self._client = QingCloudClient(endpoint, zone, access_key_id, secret_access_key, timeout=timeout)
        self._log = get_logger("pitrix.providers.qingcloud", zone=zone)
        self._tag_ids: dict[str, str] = {}
        self._tag_lock = asyncio.Lock()

    @classmethod
    def from_runtime(cls, runtime: Mapping[str, Any]) -> QingCloudProvider:
        """Build from a runtime definition; a missing key is named in the error."""
        missing = [key for key in RUNTIME_KEYS if not runtime.get(key)]
        if missing:
            raise ProviderError(f"qingcloud runtime: missing {', '.join(missing)}", code="config")
        timeout = runtime.get("timeout", 30.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ProviderError(f"qingcloud runtime: timeout must be a positive number, got {timeout!r}")
        return cls(
            str(runtime["endpoint"]),
            str(runtime["zone"]),
            str(runtime["access_key_id"]),
            str(runtime["secret_access_key"]),
            timeout=float(timeout),
            network=runtime_vxnet(runtime),
        )

    # -- instances ---------------------------------------------------------------------------------

    async def run_instances(self, specs: list[InstanceSpec]) -> list[Instance]:
        """One RunInstances per spec, concurrently; raises the first failure after all have answered."""
        limit = asyncio.Semaphore(RUN_CONCURRENCY)

        async def run(spec: InstanceSpec) -> Instance:
            async with limit:
                return await self._run_one(spec)

        results = await asyncio.gather(*(run(spec) for spec in specs), return_exceptions=True)
        created = [r for r in results if isinstance(r, Instance)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if created:
                self._log.warning(
                    "qingcloud.run_partial", created=[i.instance_id for i in created], failed=len(errors)
                )
            raise errors[0]
        return created

    async def _run_one(self, spec: InstanceSpec) -> Instance:
        params: dict[str, object] = {
            "image_id": spec.image,
            "cpu": spec.cpu,
            "memory": spec.memory,
            "count": 1,
            "instance_name": spec.name,
        }
        if spec.instance_type:  # QingCloud's type names a size: it replaces cpu and memory
            params["instance_type"] = spec.instance_type
            del params["cpu"], params["memory"]
        if spec.key_pair:
            params.update(login_mode="keypair", login_keypair=spec.key_pair)
        else:
            # QingCloud insists on a login mode; nobody logs in with this password.
            params.update(login_mode="passwd", login_passwd="Px" + secrets.token_urlsafe(12) + "9")
        # RunInstances places an instance in the vxnets it names (none: no network at all).
        params["vxnets.1"] = spec.network or self.network
        if spec.userdata:
            params.update(await self._userdata(spec.userdata))
        reply = await self._client.call("RunInstances", params, idempotent=False)
        ids = reply.get("instances") or []
        if len(ids) != 1:
            raise ProviderError(f"qingcloud RunInstances {spec.name}: expected one instance, got {ids!r}")
        self._log.info("qingcloud.run", instance_id=ids[0], name=spec.name, job_id=reply.get("job_id"))
        if spec.tags:
            await self._attach_tags(str(ids[0]), spec.tags)
        return Instance(instance_id=str(ids[0]), name=spec.name, status="pending", tags=dict(spec.tags))

    async def _userdata(self, script: str) -> dict[str, object]:
        """The boot script as QingCloud runs one: type ``exec`` (written to /etc/rc.local, which
        the image runs at boot), or, beyond the 4 KiB an ``exec`` value may have, an archive
        holding ``etc/rc.local`` uploaded first and sent as type ``tar`` (unpacked from /)."""
        value = base64.b64encode(script.encode()).decode()
        if len(value) <= USERDATA_VALUE_LIMIT:
            return {"need_userdata": 1, "userdata_type": "exec", "userdata_value": value}
        archive = boot_archive(script.encode())
        reply = await self._client.call(
            "UploadUserDataAttachment",
            {"attachment_content": base64.b64encode(archive).decode(), "attachment_name": "pitrix-boot.tgz"},
        )  # repeatable: a lost answer leaves at most an unused attachment
        attachment = str(reply.get("attachment_id") or "")
        if not attachment:
            raise ProviderError(f"qingcloud UploadUserDataAttachment: no attachment id in {reply!r}")
        self._log.info("qingcloud.userdata_attachment", attachment_id=attachment, script_bytes=len(script))
        return {"need_userdata": 1, "userdata_type": "tar", "userdata_value": attachment}

    async def _tag_id(self, name: str) -> str:
        """The id of the tag named ``name``, created once (under a lock, so never twice from here)."""
        async with self._tag_lock:
            if name not in self._tag_ids:
                reply = await self._client.call("DescribeTags", {"search_word": name, "limit": 100})
                found = [t for t in reply.get("tag_set") or [] if t.get("tag_name") == name]
                if found:
                    self._tag_ids[name] = str(found[0]["tag_id"])
                else:
                    created = await self._client.call("CreateTag", {"tag_name": name}, idempotent=False)
                    self._tag_ids[name] = str(created["tag_id"])
            return self._tag_ids[name]

    async def _attach_tags(self, instance_id: str, tags: Mapping[str, str]) -> None:
        """Label a new instance; its name stays the lookup key, tags serve leak detection."""
        params: dict[str, object] = {}
        for n, (key, value) in enumerate(sorted(tags.items()), start=1):
            params[f"resource_tag_pairs.{n}.tag_id"] = await self._tag_id(f"{key}={value}")
            params[f"resource_tag_pairs.{n}.resource_type"] = "instance"
            params[f"resource_tag_pairs.{n}.resource_id"] = instance_id
        await self._client.call("AttachTags", params)

    async def _describe(
        self,
        *,
        instance_ids: list[str] | None = None,
        search_word: str | None = None,
        statuses: Iterable[str] = (),
    ) -> list[Instance]:
        """Every page of DescribeInstances for these filters (terminated ones included)."""
        base: dict[str, object] = {"verbose": 1, **_indexed("status", statuses)}
        if search_word:
            base["search_word"] = search_word
        id_groups: list[list[str] | None] = (
            list(_chunks(instance_ids)) if instance_ids is not None else [None]
        )
        found: list[Instance] = []
        for group in id_groups:
            params = dict(base)
            if group is not None:
                params.update(_indexed("instances", group))
            offset = 0
            while True:
                reply = await self._client.call(
                    "DescribeInstances", {**params, "offset": offset, "limit": self.page_size}
                )
                page = reply.get("instance_set") or []
                found.extend(to_instance(item) for item in page)
                offset += len(page)
                if not page or offset >= int(reply.get("total_count", 0)):
                    break
        return found

    async def describe_instances(
        self, *, instance_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Instance]:
        if instance_ids is not None and not instance_ids:
            return []
        found = await self._describe(
            instance_ids=instance_ids, search_word=name_prefix, statuses=LIVE_STATUSES
        )
        return [
            i
            for i in found
            if i.status not in GONE_STATUSES and (name_prefix is None or i.name.startswith(name_prefix))
        ]

    async def _act(self, action: str, instance_ids: list[str], skip: frozenset[str]) -> None:
        """Run ``action`` on the instances not already in a ``skip`` status, and wait for its jobs."""
        if not instance_ids:
            return
        current = {i.instance_id: i for i in await self._describe(instance_ids=instance_ids)}
        todo = [iid for iid in instance_ids if iid in current and current[iid].status not in skip]
        jobs = []
        for group in _chunks(todo):
            reply = await self._client.call(action, _indexed("instances", group))
            if reply.get("job_id"):
                jobs.append(str(reply["job_id"]))
        self._log.info(f"qingcloud.{action}", instance_ids=todo, skipped=len(instance_ids) - len(todo))
        await self.wait_jobs(jobs, self.job_timeout)

    async def terminate_instances(self, instance_ids: list[str]) -> None:
        """Terminate and wait until done; ids already gone (or never seen) are skipped."""
        await self._act("TerminateInstances", instance_ids, GONE_STATUSES)

    async def start_instances(self, instance_ids: list[str]) -> None:
        await self._act("StartInstances", instance_ids, GONE_STATUSES | {"running", "pending"})

    async def stop_instances(self, instance_ids: list[str]) -> None:
        await self._act("StopInstances", instance_ids, GONE_STATUSES | {"stopped"})

    async def restart_instances(self, instance_ids: list[str]) -> None:
        """Power-cycle the running ones (QingCloud restarts only running instances) and wait."""
        await self._act("RestartInstances", instance_ids, GONE_STATUSES | {"pending", "stopped", "suspended"})

    async def check_network(self) -> None:
        """Raise ``ProviderError`` (code ``network``) unless the runtime's vxnet exists: a typo
        would otherwise fail only the first RunInstances of the first create."""
        if self.network == BASE_VXNET:
            return
        reply = await self._client.call("DescribeVxNets", {"vxnets.1": self.network, "limit": 1})
        found = [v for v in reply.get("vxnet_set") or [] if v.get("vxnet_id") == self.network]
        if not found:
            raise ProviderError(
                f"qingcloud: vxnet {self.network} does not exist in zone {self.zone}", code="network"
            )

    # -- key pairs -----------------------------------------------------------------------------------

    async def create_key_pair(
        self, name: str, *, public_key: str = "", encrypt_method: str = "ssh-rsa"
    ) -> KeyPair:
        """Import ``public_key``, or (without one) have the cloud generate the pair.

        A generated pair's private key is in the answer once and nowhere else, as on QingCloud.
        """
        params: dict[str, object] = {"keypair_name": name}
        if public_key:
            params.update(mode="user", public_key=public_key)
        else:
            params.update(mode="system", encrypt_method=encrypt_method)
        reply = await self._client.call("CreateKeyPair", params, idempotent=False)
        keypair_id = str(reply.get("keypair_id") or "")
        if not keypair_id:
            raise ProviderError(f"qingcloud CreateKeyPair {name}: no keypair_id in {reply!r}")
        [pair] = await self.describe_key_pairs([keypair_id])
        self._log.info("qingcloud.keypair_created", keypair_id=keypair_id, name=name)
        return dataclasses.replace(pair, private_key=str(reply.get("private_key") or ""))

    async def import_key_pair(self, name: str, public_key: str) -> str:
        """The key pair id of ``name``, created from ``public_key`` (mode ``user``) only if absent.

        A pair of that name holding another key is an error, never silently used: instances made
        with it would refuse pitrixd's logins.
        """
        wanted = public_key.split()[:2]
        pairs = await self.describe_key_pairs(name=name)
        for pair in pairs:
            if pair.public_key.split()[:2] != wanted:
                raise ProviderError(
                    f"qingcloud key pair {name} ({pair.keypair_id}) holds another public key", code="conflict"
                )
        if pairs:  # names are not unique here: after a race, every caller settles on the same one
            return min(pair.keypair_id for pair in pairs)
        return (await self.create_key_pair(name, public_key=public_key)).keypair_id

    async def describe_key_pairs(
        self, keypair_ids: list[str] | None = None, *, name: str | None = None
    ) -> list[KeyPair]:
        """Key pairs by id, or by exact name (``search_word`` matches substrings, so it is refined)."""
        if keypair_ids is not None and not keypair_ids:
            return []
        base: dict[str, object] = {"verbose": 1}
        if name:
            base["search_word"] = name
        groups: list[list[str] | None] = list(_chunks(keypair_ids)) if keypair_ids is not None else [None]
        found: list[KeyPair] = []
        for group in groups:
            params = dict(base, **_indexed("keypairs", group or []))
            offset = 0
            while True:
                reply = await self._client.call(
                    "DescribeKeyPairs", {**params, "offset": offset, "limit": PAGE}
                )
                page = reply.get("keypair_set") or []
                found.extend(to_key_pair(item) for item in page)
                offset += len(page)
                if not page or offset >= int(reply.get("total_count", 0)):
                    break
        return [pair for pair in found if name is None or pair.name == name]

    async def attach_key_pairs(self, keypair_ids: list[str], instance_ids: list[str]) -> None:
        await self._keypair_job("AttachKeyPairs", keypair_ids, instance_ids)

    async def detach_key_pairs(self, keypair_ids: list[str], instance_ids: list[str]) -> None:
        await self._keypair_job("DetachKeyPairs", keypair_ids, instance_ids)

    async def _keypair_job(self, action: str, keypair_ids: list[str], instance_ids: list[str]) -> None:
        if not keypair_ids or not instance_ids:
            return
        jobs = []
        for group in _chunks(instance_ids):
            params = {**_indexed("keypairs", keypair_ids), **_indexed("instances", group)}
            reply = await self._client.call(action, params)
            if reply.get("job_id"):
                jobs.append(str(reply["job_id"]))
        await self.wait_jobs(jobs, self.job_timeout)

    async def delete_key_pairs(self, keypair_ids: list[str]) -> None:
        """Delete key pairs; ids already gone are skipped (a repeated step does not fail)."""
        if not keypair_ids:
            return
        existing = {pair.keypair_id for pair in await self.describe_key_pairs(keypair_ids)}
        todo = [kid for kid in dict.fromkeys(keypair_ids) if kid in existing]
        for group in _chunks(todo):
            await self._client.call("DeleteKeyPairs", _indexed("keypairs", group))

    # -- volumes ---------------------------------------------------------------------------------------

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        """CreateVolumes of one, waited for. QingCloud volumes take no tags here: the name is the
        lookup key, as for instances."""
        if spec.snapshot_id:
            return await self._volume_from_snapshot(spec)
        reply = await self._client.call(
            "CreateVolumes", {"size": spec.size, "volume_name": spec.name, "count": 1}, idempotent=False
        )
        ids = reply.get("volumes") or []
        if len(ids) != 1:
            raise ProviderError(f"qingcloud CreateVolumes {spec.name}: expected one volume, got {ids!r}")
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        self._log.info("qingcloud.volume_created", volume_id=ids[0], name=spec.name, size=spec.size)
        found = await self.describe_volumes(volume_ids=[str(ids[0])])
        if not found:
            raise ProviderError(f"qingcloud CreateVolumes {spec.name}: volume {ids[0]} vanished")
        return found[0]

    async def describe_volumes(
        self, *, volume_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Volume]:
        if volume_ids is not None and not volume_ids:
            return []
        base: dict[str, object] = {"verbose": 1, **_indexed("status", LIVE_VOLUME_STATUSES)}
        if name_prefix:
            base["search_word"] = name_prefix
        groups: list[list[str] | None] = list(_chunks(volume_ids)) if volume_ids is not None else [None]
        found: list[Volume] = []
        for group in groups:
            params = dict(base, **_indexed("volumes", group or []))
            offset = 0
            while True:
                reply = await self._client.call(
                    "DescribeVolumes", {**params, "offset": offset, "limit": PAGE}
                )
                page = reply.get("volume_set") or []
                found.extend(to_volume(item) for item in page)
                offset += len(page)
                if not page or offset >= int(reply.get("total_count", 0)):
                    break
        return [
            v
            for v in found
            if v.status != "deleted" and (name_prefix is None or v.name.startswith(name_prefix))
        ]

    async def _volume(self, volume_id: str) -> Volume | None:
        found = await self.describe_volumes(volume_ids=[volume_id])
        return found[0] if found else None

    async def _volume_job(self, action: str, params: Mapping[str, object]) -> None:
        # Not repeated blindly: a second attach of an attached volume is refused (2500), so an
        # ambiguous failure goes back to the step, which looks at the volume before acting again.
        reply = await self._client.call(action, params, idempotent=False)
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)

    async def _until_available(self, volume_id: str) -> Volume:
        found: list[Volume] = []

        async def available() -> bool | None:
            volume = await self._volume(volume_id)
            if volume is None:
                raise ProviderError(f"qingcloud: volume {volume_id} not found", code="2100")
            found[:] = [volume]
            return True if volume.status != "pending" else None

        await wait_for(
            available, timeout=self.job_timeout, what=f"qingcloud: volume {volume_id}", backoff=POLL()
        )
        return found[0]

    async def attach_volume(self, volume_id: str, instance_id: str) -> Volume:
        volume = attachable("qingcloud", await self._volume(volume_id), volume_id, instance_id, "2100")
        if volume.status == "pending" and not volume.instance_id:
            volume = await self._until_available(volume_id)  # found while its create still ran
        if volume.instance_id != instance_id or volume.status != "in-use":
            await self._volume_job("AttachVolumes", {"volumes.1": volume_id, "instance": instance_id})
            self._log.info("qingcloud.volume_attached", volume_id=volume_id, instance_id=instance_id)
            after = await self._volume(volume_id)
            if after is None or after.instance_id != instance_id:
                raise ProviderError(
                    f"qingcloud: volume {volume_id} is not attached to {instance_id} after its job"
                )
            volume = after
        return volume

    async def detach_volume(self, volume_id: str) -> None:
        volume = await self._volume(volume_id)
        if volume is None or not volume.instance_id:
            return
        await self._volume_job("DetachVolumes", {"volumes.1": volume_id, "instance": volume.instance_id})
        self._log.info("qingcloud.volume_detached", volume_id=volume_id, instance_id=volume.instance_id)

    async def delete_volumes(self, volume_ids: list[str]) -> None:
        if not volume_ids:
            return
        existing = await self.describe_volumes(volume_ids=list(dict.fromkeys(volume_ids)))
        for volume in existing:
            if volume.instance_id:
                await self.detach_volume(volume.volume_id)
        todo = [v.volume_id for v in existing]
        for group in _chunks(todo):
            await self._volume_job("DeleteVolumes", _indexed("volumes", group))
        if todo:
            self._log.info("qingcloud.volumes_deleted", volume_ids=todo)

    # -- snapshots (backup) ----------------------------------------------------------------------

    async def _volume_from_snapshot(self, spec: VolumeSpec) -> Volume:
        """CreateVolumeFromSnapshot (one volume, the snapshot's size), waited for."""
        reply = await self._client.call(
            "CreateVolumeFromSnapshot",
            {"snapshot": spec.snapshot_id, "volume_name": spec.name},
            idempotent=False,
        )
        volume_id = str(reply.get("volume_id") or "")
        if not volume_id:
            raise ProviderError(f"qingcloud CreateVolumeFromSnapshot {spec.name}: no volume id in {reply!r}")
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        self._log.info("qingcloud.volume_from_snapshot", volume_id=volume_id, snapshot_id=spec.snapshot_id)
        found = await self.describe_volumes(volume_ids=[volume_id])
        if not found:
            raise ProviderError(
                f"qingcloud CreateVolumeFromSnapshot {spec.name}: volume {volume_id} vanished"
            )
        return found[0]

    async def create_snapshot(self, volume_id: str, name: str, tags: Mapping[str, str]) -> Snapshot:
        """CreateSnapshots of one volume (a full one: a backup must not hang on a chain), waited
        for. Like volumes, QingCloud snapshots are found again by name, not tags."""
        reply = await self._client.call(
            "CreateSnapshots",
            {"resources.1": volume_id, "snapshot_name": name, "is_full": 1},
            idempotent=False,
        )
        ids = reply.get("snapshots") or []
        if len(ids) != 1:
            raise ProviderError(f"qingcloud CreateSnapshots {name}: expected one snapshot, got {ids!r}")
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        self._log.info("qingcloud.snapshot_created", snapshot_id=ids[0], volume_id=volume_id, name=name)
        found = await self.describe_snapshots(snapshot_ids=[str(ids[0])])
        if not found:
            raise ProviderError(f"qingcloud CreateSnapshots {name}: snapshot {ids[0]} vanished")
        return found[0]

    async def describe_snapshots(
        self, *, snapshot_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Snapshot]:
        if snapshot_ids is not None and not snapshot_ids:
            return []
        base: dict[str, object] = {"verbose": 1, **_indexed("status", LIVE_SNAPSHOT_STATUSES)}
        if name_prefix:
            base["search_word"] = name_prefix
        groups: list[list[str] | None] = list(_chunks(snapshot_ids)) if snapshot_ids is not None else [None]
        found: list[Snapshot] = []
        for group in groups:
            params = dict(base, **_indexed("snapshots", group or []))
            offset = 0
            while True:
                reply = await self._client.call(
                    "DescribeSnapshots", {**params, "offset": offset, "limit": PAGE}
                )
                page = reply.get("snapshot_set") or []
                found.extend(to_snapshot(item) for item in page)
                offset += len(page)
                if not page or offset >= int(reply.get("total_count", 0)):
                    break
        return [
            s
            for s in found
            if s.status != "deleted" and (name_prefix is None or s.name.startswith(name_prefix))
        ]

    async def delete_snapshots(self, snapshot_ids: list[str]) -> None:
        if not snapshot_ids:
            return
        existing = await self.describe_snapshots(snapshot_ids=list(dict.fromkeys(snapshot_ids)))
        todo = [s.snapshot_id for s in existing]
        for group in _chunks(todo):
            await self._volume_job("DeleteSnapshots", _indexed("snapshots", group))
        if todo:
            self._log.info("qingcloud.snapshots_deleted", snapshot_ids=todo)

    # -- host keys -------------------------------------------------------------------------------

    async def host_keys(self, instance: Instance) -> list[str]:
        """The host keys in the instance's description (``ssh_host_key``, one per line).

        Real QingCloud publishes none (nor a console to read them from), so there the list stays
        empty and SSH refuses the instance; the simulator publishes the key once the VM first
        booted, so a description taken before that is read again.
        """
        lines = host_key_lines(instance.raw)
        if lines:
            return lines
        found = await self._describe(instance_ids=[instance.instance_id])
        return host_key_lines(found[0].raw) if found else []

    # -- waiting -----------------------------------------------------------------------------------

    async def wait_jobs(self, job_ids: list[str], timeout: float) -> None:
        """Until every job is successful (``ProviderError`` if one fails or time runs out)."""
        pending = set(job_ids)
        if not pending:
            return

        async def finished() -> bool | None:
            reply = await self._client.call(
                "DescribeJobs", {**_indexed("jobs", sorted(pending)), "limit": PAGE}
            )
            jobs = reply.get("job_set") or []
            unknown = pending - {job.get("job_id") for job in jobs}
            if unknown:
                raise ProviderError(f"qingcloud: jobs {sorted(unknown)} not found", code="job-not-found")
            for job in jobs:
                status = job.get("status")
                if status == "successful":
                    pending.discard(job.get("job_id"))
                elif status in ("failed", "done with failure"):
                    raise ProviderError(
                        f"qingcloud job {job.get('job_id')} ({job.get('job_action')}) {status}",
                        code="job-failed",
                    )
            return None if pending else True

        await wait_for(finished, timeout=timeout, what=f"qingcloud: jobs {sorted(pending)}", backoff=POLL())

    async def _by_ids(self, instance_ids: list[str]) -> dict[str, Instance]:
        return {i.instance_id: i for i in await self._describe(instance_ids=instance_ids)}

    async def wait_running(self, instance_ids: list[str], timeout: float) -> list[Instance]:
        """Poll DescribeInstances until all run; a missing, terminated or stopped one fails at once."""
        return await wait_all_running(
            self._by_ids,
            instance_ids,
            timeout=timeout,
            cloud="qingcloud",
            # Stopped and not on its way elsewhere: a failed boot, which will not run by itself.
            halted=lambda i: i.status in ("stopped", "suspended") and not i.raw.get("transition_status"),
            backoff=POLL(),
        )

    async def close(self) -> None:
        await self._client.close()

    # -- resize ----------------------------------------------------------------------------------
    # ResizeInstances (instances.N with instance_type, or cpu and memory) takes stopped instances
    # only; ResizeVolumes (volumes.N, size) takes a volume that is detached or whose instance is
    # stopped, and only grows it. Neither is online here.

    online_resize: ClassVar[bool] = False
    online_volume_growth: ClassVar[bool] = False

    async def resize_instance(
        self, instance_id: str, *, cpu: int, memory: int, instance_type: str = ""
    ) -> None:
        found = await self._describe(instance_ids=[instance_id])
        live = [i for i in found if i.status not in GONE_STATUSES]
        if not live:
            raise ProviderError(f"qingcloud: instance {instance_id} not found", code="2100")
        raw = live[0].raw
        if instance_type:
            if raw.get("instance_type") == instance_type:
                return
            params: dict[str, object] = {"instance_type": instance_type}
        else:
            if int(raw.get("vcpus_current") or 0) == cpu and int(raw.get("memory_current") or 0) == memory:
                return
            params = {"cpu": cpu, "memory": memory}
        reply = await self._client.call(
            "ResizeInstances", {**params, "instances.1": instance_id}, idempotent=False
        )
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        self._log.info("qingcloud.instance_resized", instance_id=instance_id, **params)

    async def grow_volume(self, volume_id: str, size: int) -> Volume:
        volume = await self._volume(volume_id)
        if volume is None:
            raise ProviderError(f"qingcloud: volume {volume_id} not found", code="2100")
        if volume.size == size:
            return volume
        await self._volume_job("ResizeVolumes", {"volumes.1": volume_id, "size": size})
        self._log.info("qingcloud.volume_grown", volume_id=volume_id, size=size)
        after = await self._volume(volume_id)
        if after is None or after.size != size:
            raise ProviderError(f"qingcloud: volume {volume_id} is not {size} GiB after its job")
        return after
