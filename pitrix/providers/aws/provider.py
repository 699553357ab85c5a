"""``AwsProvider``: the runtime's provider interface over EC2 with aioboto3.

EC2 makes a create idempotent through ``ClientToken``: the token is derived from the instance's
deterministic name, so a RunInstances repeated after a lost answer returns the instance the first
one made instead of a second one. That makes every call this provider sends safe to repeat, so
throttling and server errors are retried here with backoff (``polling.with_retries``; botocore's
own retries are off, so each retry is logged once, by us). Waiting polls DescribeInstances with a
growing delay, since boto's waiters sleep 15 s between looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, cast

import aioboto3
from botocore.config import Config

from pitrix.logs import get_logger
from pitrix.providers.aws.errors import to_provider_error
from pitrix.providers.aws.instance_types import DEFAULT_TYPES, choose, parse_types
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
from pitrix.providers.polling import wait_all_running, wait_for, with_retries

# EC2 state → the runtime's status. A shutting-down instance is as good as gone for a lookup.
STATES: dict[str, InstanceStatus] = {
    "pending": "pending",
    "running": "running",
    "stopping": "stopped",
    "stopped": "stopped",
    "shutting-down": "terminated",
    "terminated": "terminated",
}
LIVE_STATES = ("pending", "running", "stopping", "stopped")
NAME_TAG = "Name"
RUN_CONCURRENCY = 8  # RunInstances in flight at once: a large cluster should not earn throttling
TOKEN_GENERATIONS = 16  # recreations of one name before giving up
ID_BATCH = 200  # instance ids per filter value list (EC2 allows up to 200 values per filter)


def client_token(name: str, generation: int = 0) -> str:
    """EC2's idempotency token for the instance called ``name`` (at most 64 ASCII characters)."""
    seed = name if generation == 0 else f"{name}#{generation}"
    return "pitrix-" + hashlib.sha256(seed.encode()).hexdigest()[:48]


def to_instance(item: Mapping[str, Any], ssh_port: int = 22) -> Instance:
    """An ``Instance`` from one element of a reservation's ``Instances``."""
    tags = {str(t["Key"]): str(t.get("Value", "")) for t in item.get("Tags") or [] if "Key" in t}
    state = str((item.get("State") or {}).get("Name", ""))
    return Instance(
        instance_id=str(item["InstanceId"]),
        name=tags.pop(NAME_TAG, ""),
        status=STATES.get(state, "unknown"),
        private_ip=str(item.get("PrivateIpAddress") or ""),
        ssh_port=ssh_port,
        tags=tags,
        raw=dict(item),
    )


VOLUME_STATES: dict[str, VolumeStatus] = {
    "creating": "pending",
    "available": "available",
    "in-use": "in-use",
    "deleting": "deleted",
    "deleted": "deleted",
}
# Device names EBS volumes are attached under (AWS's advice for Linux: /dev/sd[f-p]).
EBS_DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")


def ebs_device_paths(volume_id: str, device: str) -> tuple[str, ...]:
    """Where a Linux guest finds an EBS volume: Nitro instances show it as NVMe (named by its
    volume id in /dev/disk/by-id), Xen ones rename /dev/sdX to /dev/xvdX."""
    paths = [f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"]
    if device:
        paths += [device.replace("/dev/sd", "/dev/xvd"), device]
    return tuple(paths)


def to_volume(item: Mapping[str, Any]) -> Volume:
    tags = {str(t["Key"]): str(t.get("Value", "")) for t in item.get("Tags") or [] if "Key" in t}
    attachments = [a for a in item.get("Attachments") or [] if a.get("State") in ("attaching", "attached")]
    attached = attachments[0] if attachments else {}
    volume_id = str(item["VolumeId"])
    state = str(item.get("State", ""))
    return Volume(
        volume_id=volume_id,
        name=tags.pop(NAME_TAG, ""),
        size=int(item.get("Size") or 0),
        # An attachment still under way is not in use yet: attach waits for "attached".
        status="pending" if attached.get("State") == "attaching" else VOLUME_STATES.get(state, "unknown"),
        instance_id=str(attached.get("InstanceId") or ""),
        device_paths=ebs_device_paths(volume_id, str(attached.get("Device") or "")) if attached else (),
        tags=tags,
        raw=dict(item),
    )


def _strings(runtime: Mapping[str, Any], key: str) -> list[str]:
    value = runtime.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ProviderError(f"aws runtime: {key} must be a string or a list of strings", code="config")


def _optional_string(runtime: Mapping[str, Any], key: str) -> str:
    value = runtime.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProviderError(f"aws runtime: {key} must be a string", code="config")
    return value


def _positive(runtime: Mapping[str, Any], key: str, default: float) -> float:
    value = runtime.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProviderError(f"aws runtime: {key} must be a positive number, got {value!r}", code="config")
    return float(value)


class AwsProvider:
    """The ``aws`` provider (entry point ``pitrix.providers: aws``)."""

    name: ClassVar[str] = "aws"

    def __init__(
        self,
        region: str,
        *,
        endpoint: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        session_token: str = "",
        profile: str = "",
        availability_zone: str = "",
        subnet_id: str = "",
        security_group_ids: list[str] | None = None,
        key_name: str = "",
        instance_types: tuple[tuple[str, int, int], ...] = DEFAULT_TYPES,
        timeout: float = 30.0,
        attempts: int = 6,
        wait_timeout: float = 600.0,
        ssh_port: int = 22,
    ) -> None:
        if not region:
            raise ProviderError("aws runtime: region must be a non-empty string", code="config")
        if bool(access_key_id) != bool(secret_access_key):
            raise ProviderError(
                "aws runtime: access_key_id and secret_access_key go together (or neither, for the "
                "SDK's usual credential chain)",
                code="config",
            )
        self.region = region
        self.endpoint = endpoint
        self.availability_zone = availability_zone
        self.subnet_id = subnet_id
        self.security_group_ids = list(security_group_ids or [])
        self.key_name = key_name
        self.instance_types = instance_types
        self.attempts = attempts
        self.wait_timeout = wait_timeout
        self.ssh_port = ssh_port
        # Credentials live only in the session; nothing else keeps or logs them.
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            aws_session_token=session_token or None,
            profile_name=profile or None,
            region_name=region,
        )
        self._config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1},  # retried here, where the retry is logged
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._log = get_logger("pitrix.providers.aws", region=region)

    @classmethod
    def from_runtime(cls, runtime: Mapping[str, Any]) -> AwsProvider:
        """Build from a runtime definition; ``region`` (or an availability ``zone``) is required.

        Credentials are optional: without them the SDK's chain is used (environment, profile,
        instance role), as the AWS CLI would.
        """
        zone = _optional_string(runtime, "zone")
        region = _optional_string(runtime, "region")
        availability_zone = ""
        if zone and zone[-1].isalpha() and zone[-2:-1].isdigit():
            availability_zone = zone  # us-east-1a: an availability zone of region us-east-1
            region = region or zone[:-1]
        region = region or zone
        if not region:
            raise ProviderError("aws runtime: missing region", code="config")
        attempts = _positive(runtime, "attempts", 6)
        types = parse_types(runtime["instance_types"]) if "instance_types" in runtime else DEFAULT_TYPES
        ssh_port = runtime.get("ssh_port", 22)  # 22 on EC2; the simulator's VMs listen elsewhere
        if not isinstance(ssh_port, int) or isinstance(ssh_port, bool) or not 0 < ssh_port < 65536:
            raise ProviderError(f"aws runtime: ssh_port must be a TCP port, got {ssh_port!r}", code="config")
        return cls(
            region,
            endpoint=_optional_string(runtime, "endpoint"),
            access_key_id=_optional_string(runtime, "access_key_id"),
            secret_access_key=_optional_string(runtime, "secret_access_key"),
            session_token=_optional_string(runtime, "session_token"),
            profile=_optional_string(runtime, "profile"),
            availability_zone=availability_zone,
            subnet_id=_optional_string(runtime, "subnet_id"),
            security_group_ids=_strings(runtime, "security_group_ids"),
            key_name=_optional_string(runtime, "key_name"),
            instance_types=types,
            timeout=_positive(runtime, "timeout", 30.0),
            attempts=int(attempts),
            wait_timeout=_positive(runtime, "wait_timeout", 600.0),
            ssh_port=ssh_port,
        )

    # -- calls -------------------------------------------------------------------------------------

    async def _ec2(self) -> Any:
        # Opened lazily: the client belongs to the running loop, a provider may be built outside one.
        async with self._opening:  # concurrent first calls must not open two clients
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    self._session.client("ec2", endpoint_url=self.endpoint or None, config=self._config)
                )
                self._stack = stack
        return self._client

    async def _call(self, action: str, *, idempotent: bool = True, **params: Any) -> dict[str, Any]:
        """One EC2 action (snake_case name), retried while throttled or the server is in trouble
        (a call that is not ``idempotent``: only while EC2 certainly did nothing)."""

        async def once() -> dict[str, Any]:
            client = await self._ec2()
            method: Callable[..., Awaitable[dict[str, Any]]] = getattr(client, action)
            try:
                return await method(**params)
            except Exception as exc:
                raise to_provider_error(action, exc) from exc

        return await with_retries(
            once, action=action, attempts=self.attempts, log=self._log, idempotent=idempotent
        )

    async def import_key_pair(self, name: str, public_key: str) -> str:
        """EC2 key pairs are named by their name: look it up, import ``public_key`` if absent."""
        try:
            found = await self._call("describe_key_pairs", KeyNames=[name])
        except ProviderError as exc:
            if "NotFound" not in exc.code:
                raise
            found = {}
        if found.get("KeyPairs"):
            return name
        try:
            await self._call("import_key_pair", KeyName=name, PublicKeyMaterial=public_key.encode())
        except ProviderError as exc:
            if "Duplicate" not in exc.code:  # another replica imported it meanwhile
                raise
        return name

    async def host_keys(self, instance: Instance) -> list[str]:
        """The host keys cloud-init printed on the instance's console (GetConsoleOutput): EC2
        describes none.

        Empty while EC2 has no console output for it yet, or when the output holds no key block.
        """
        found = await self._call("get_console_output", InstanceId=instance.instance_id)
        # botocore has decoded EC2's base64 already (a handler of GetConsoleOutput); decoding it
        # again, as this did, turned a console that happened to pass for base64 into noise.
        return host_keys_from_console(str(found.get("Output") or ""))

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None

    # -- instances ---------------------------------------------------------------------------------

    async def run_instances(self, specs: list[InstanceSpec]) -> list[Instance]:
        """Create the specs' instances; a name that already has a live instance gets that one back.

        The lookup spares a RunInstances when a step is repeated; the client token covers the
        window the lookup cannot: an answer lost after EC2 acted.
        """
        names = [spec.name for spec in specs]
        if not all(names):
            raise ProviderError("aws: an instance needs a name (its client token comes from it)", code="spec")
        params = [self._run_params(spec) for spec in specs]  # bad flavors fail before anything is made
        existing: dict[str, Instance] = {}
        for start in range(0, len(names), ID_BATCH):
            batch = names[start : start + ID_BATCH]
            for found in await self._describe(
                [
                    {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
                    {"Name": f"tag:{NAME_TAG}", "Values": batch},
                ]
            ):
                existing.setdefault(found.name, found)
        limit = asyncio.Semaphore(RUN_CONCURRENCY)

        async def run(spec: InstanceSpec, run_params: dict[str, Any]) -> Instance:
            if spec.name in existing:
                self._log.info("aws.run_found", instance_id=existing[spec.name].instance_id, name=spec.name)
                return existing[spec.name]
            async with limit:
                return await self._run_one(spec.name, run_params)

        results = await asyncio.gather(
            *(run(spec, p) for spec, p in zip(specs, params, strict=True)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]  # the others were made; their names find them at the next attempt
        return cast(list[Instance], results)

    def _run_params(self, spec: InstanceSpec) -> dict[str, Any]:
        tags = [{"Key": NAME_TAG, "Value": spec.name}]
        tags += [{"Key": str(k), "Value": str(v)} for k, v in spec.tags.items() if k != NAME_TAG]
        params: dict[str, Any] = {
            "ImageId": spec.image,
            "InstanceType": spec.instance_type or choose(spec.cpu, spec.memory, self.instance_types),
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if spec.userdata:
            params["UserData"] = spec.userdata  # botocore base64-encodes RunInstances' UserData
        if spec.key_pair or self.key_name:
            params["KeyName"] = spec.key_pair or self.key_name
        if spec.network or self.subnet_id:
            params["SubnetId"] = spec.network or self.subnet_id
        if self.security_group_ids:
            params["SecurityGroupIds"] = list(self.security_group_ids)
        if self.availability_zone:
            params["Placement"] = {"AvailabilityZone": self.availability_zone}
        return params

    async def _run_one(self, name: str, params: dict[str, Any]) -> Instance:
        """RunInstances with the name's token; a token whose instance was terminated moves to the next.

        EC2 keeps a token for a while after its instance terminated and refuses to reuse it, so a
        node recreated under the same name takes the next token in a fixed sequence: a repeated
        call walks the same sequence and lands on the same instance.
        """
        for generation in range(TOKEN_GENERATIONS):
            try:
                reply = await self._call(
                    "run_instances", ClientToken=client_token(name, generation), **params
                )
            except ProviderError as exc:
                if exc.code == "IdempotentInstanceTerminated":
                    continue
                if exc.code == "IdempotentParameterMismatch":
                    raise ProviderError(
                        f"aws: instance {name} was created before with other parameters; terminate it "
                        "or use another name",
                        code=exc.code,
                    ) from exc
                raise
            items = reply.get("Instances") or []
            if len(items) != 1:
                raise ProviderError(f"aws RunInstances {name}: expected one instance, got {len(items)}")
            instance = to_instance(items[0], self.ssh_port)
            self._log.info("aws.run", instance_id=instance.instance_id, name=name, generation=generation)
            return instance
        raise ProviderError(
            f"aws: the first {TOKEN_GENERATIONS} client tokens of {name} belong to terminated instances",
            code="IdempotentInstanceTerminated",
        )

    async def _describe(self, filters: list[dict[str, Any]]) -> list[Instance]:
        """Every page of DescribeInstances for these filters."""
        found: list[Instance] = []
        token = ""
        while True:
            params: dict[str, Any] = {"Filters": filters, "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            reply = await self._call("describe_instances", **params)
            for reservation in reply.get("Reservations") or []:
                found.extend(to_instance(item, self.ssh_port) for item in reservation.get("Instances") or [])
            token = str(reply.get("NextToken") or "")
            if not token:
                return found

    async def _by_ids(self, instance_ids: list[str]) -> dict[str, Instance]:
        """Instances by id, any state; unknown ids are simply absent (a filter, not InstanceIds)."""
        found: dict[str, Instance] = {}
        for start in range(0, len(instance_ids), ID_BATCH):
            batch = instance_ids[start : start + ID_BATCH]
            for instance in await self._describe([{"Name": "instance-id", "Values": batch}]):
                found[instance.instance_id] = instance
        return found

    async def describe_instances(
        self,
        *,
        instance_ids: list[str] | None = None,
        name_prefix: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Instance]:
        """Live instances by id, by name prefix and/or by tags (all must match)."""
        if instance_ids is not None and not instance_ids:
            return []
        filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        if name_prefix:
            filters.append({"Name": f"tag:{NAME_TAG}", "Values": [name_prefix + "*"]})
        for key, value in (tags or {}).items():
            filters.append({"Name": f"tag:{key}", "Values": [value]})
        if instance_ids is not None:
            found = []
            for start in range(0, len(instance_ids), ID_BATCH):
                batch = instance_ids[start : start + ID_BATCH]
                found += await self._describe([*filters, {"Name": "instance-id", "Values": batch}])
        else:
            found = await self._describe(filters)
        # EC2's wildcard also matches * and ? inside the prefix: keep exact prefixes only.
        return [
            i
            for i in found
            if i.status != "terminated" and (not name_prefix or i.name.startswith(name_prefix))
        ]

    async def _change(
        self, action: str, instance_ids: list[str], skip: frozenset[str], until: frozenset[str]
    ) -> None:
        """``action`` on the instances not in a ``skip`` state, then wait until all are in ``until``."""
        if not instance_ids:
            return
        current = await self._by_ids(instance_ids)
        states = {iid: str(i.raw.get("State", {}).get("Name", "")) for iid, i in current.items()}
        todo = [iid for iid in instance_ids if iid in states and states[iid] not in skip]
        for start in range(0, len(todo), ID_BATCH):
            await self._call(action, InstanceIds=todo[start : start + ID_BATCH])
        self._log.info(f"aws.{action}", instance_ids=todo, skipped=len(instance_ids) - len(todo))
        waiting = [iid for iid in instance_ids if iid in states]

        async def arrived() -> bool | None:
            now = await self._by_ids(waiting)
            late = [iid for iid in waiting if str(now[iid].raw.get("State", {}).get("Name")) not in until]
            return True if not late else None

        if waiting:
            await wait_for(arrived, timeout=self.wait_timeout, what=f"aws {action} {waiting}")

    async def terminate_instances(self, instance_ids: list[str]) -> None:
        """Terminate and wait until terminated; ids already gone (or never seen) are skipped."""
        await self._change(
            "terminate_instances", instance_ids, frozenset({"terminated"}), frozenset({"terminated"})
        )

    async def stop_instances(self, instance_ids: list[str]) -> None:
        await self._change(
            "stop_instances",
            instance_ids,
            frozenset({"stopping", "stopped", "shutting-down", "terminated"}),
            frozenset({"stopped", "terminated"}),
        )

    async def start_instances(self, instance_ids: list[str]) -> None:
        await self._change(
            "start_instances",
            instance_ids,
            frozenset({"pending", "running", "shutting-down", "terminated"}),
            frozenset({"running", "terminated"}),
        )

    async def wait_running(self, instance_ids: list[str], timeout: float) -> list[Instance]:
        """Poll until all run; a missing, terminated or stopped one fails at once."""
        return await wait_all_running(
            self._by_ids, instance_ids, timeout=timeout, cloud="aws", halted=lambda i: i.status == "stopped"
        )

    # -- volumes (EBS) ---------------------------------------------------------------------------------

    async def _volumes(self, filters: list[dict[str, Any]]) -> list[Volume]:
        found: list[Volume] = []
        token = ""
        while True:
            params: dict[str, Any] = {"Filters": filters, "MaxResults": 500}
            if token:
                params["NextToken"] = token
            reply = await self._call("describe_volumes", **params)
            found.extend(to_volume(item) for item in reply.get("Volumes") or [])
            token = str(reply.get("NextToken") or "")
            if not token:
                return found

    async def describe_volumes(
        self, *, volume_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Volume]:
        if volume_ids is not None and not volume_ids:
            return []
        filters: list[dict[str, Any]] = [
            {"Name": "status", "Values": ["creating", "available", "in-use", "error"]}
        ]
        if name_prefix:
            filters.append({"Name": f"tag:{NAME_TAG}", "Values": [name_prefix + "*"]})
        if volume_ids is not None:
            filters.append({"Name": "volume-id", "Values": list(dict.fromkeys(volume_ids))})
        return [
            v
            for v in await self._volumes(filters)
            if v.status != "deleted" and (not name_prefix or v.name.startswith(name_prefix))
        ]

    async def _volume(self, volume_id: str) -> Volume | None:
        found = await self.describe_volumes(volume_ids=[volume_id])
        return found[0] if found else None

    async def _wait_volume(self, volume_id: str, arrived: Callable[[Volume | None], bool], what: str) -> None:
        async def check() -> bool | None:
            return True if arrived(await self._volume(volume_id)) else None

        await wait_for(check, timeout=self.wait_timeout, what=f"aws volume {volume_id} {what}")

    async def _zone_of(self, instance_id: str) -> str:
        if instance_id:
            found = await self._by_ids([instance_id])
            if instance_id in found:
                zone = str((found[instance_id].raw.get("Placement") or {}).get("AvailabilityZone") or "")
                if zone:
                    return zone
        if self.availability_zone:
            return self.availability_zone
        zones = await self._call("describe_availability_zones")
        names = sorted(str(z["ZoneName"]) for z in zones.get("AvailabilityZones") or [] if "ZoneName" in z)
        if not names:
            raise ProviderError(f"aws: region {self.region} lists no availability zone", code="config")
        return names[0]

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        """CreateVolume (gp3) in the zone of the instance it is for, named by its Name tag.

        No client token: EC2 would hand back a deleted volume for a token reused by a node's
        next volume of the same name; the step looks the name up before creating instead.
        """
        tags = [{"Key": NAME_TAG, "Value": spec.name}]
        tags += [{"Key": str(k), "Value": str(v)} for k, v in spec.tags.items() if k != NAME_TAG]
        # backup: from a snapshot, the volume starts as its copy (at least the snapshot's size)
        source = {"SnapshotId": spec.snapshot_id} if spec.snapshot_id else {}
        reply = await self._call(
            "create_volume",
            idempotent=False,
            AvailabilityZone=await self._zone_of(spec.instance_id),
            Size=spec.size,
            VolumeType="gp3",
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
            **source,
        )
        volume_id = str(reply["VolumeId"])
        self._log.info("aws.volume_created", volume_id=volume_id, name=spec.name, size=spec.size)
        await self._wait_volume(
            volume_id, lambda v: v is not None and v.status == "available", "to become available"
        )
        found = await self._volume(volume_id)
        if found is None:
            raise ProviderError(f"aws CreateVolume {spec.name}: volume {volume_id} vanished")
        return found

    async def attach_volume(self, volume_id: str, instance_id: str) -> Volume:
        volume = attachable(
            "aws", await self._volume(volume_id), volume_id, instance_id, "InvalidVolume.NotFound"
        )
        if volume.status == "pending" and not volume.instance_id:  # found while its create still ran
            await self._wait_volume(volume_id, lambda v: v is None or v.status != "pending", "to be created")
        if not volume.instance_id:
            found = await self._by_ids([instance_id])
            if instance_id not in found:
                raise ProviderError(
                    f"aws: instance {instance_id} not found", code="InvalidInstanceID.NotFound"
                )
            taken = {
                str(m.get("DeviceName")) for m in found[instance_id].raw.get("BlockDeviceMappings") or []
            }
            free = [d for d in EBS_DEVICES if d not in taken]
            if not free:
                raise ProviderError(f"aws: instance {instance_id} has no free device name", code="devices")
            await self._call(
                "attach_volume", idempotent=False, VolumeId=volume_id, InstanceId=instance_id, Device=free[0]
            )
            self._log.info(
                "aws.volume_attached", volume_id=volume_id, instance_id=instance_id, device=free[0]
            )
        await self._wait_volume(
            volume_id,
            lambda v: v is not None and v.instance_id == instance_id and v.status == "in-use",
            f"to be attached to {instance_id}",
        )
        attached = await self._volume(volume_id)
        assert attached is not None
        return attached

    async def detach_volume(self, volume_id: str) -> None:
        volume = await self._volume(volume_id)
        if volume is None or not volume.instance_id:
            return
        await self._call("detach_volume", VolumeId=volume_id, InstanceId=volume.instance_id)
        self._log.info("aws.volume_detached", volume_id=volume_id, instance_id=volume.instance_id)
        await self._wait_volume(volume_id, lambda v: v is None or v.status == "available", "to be detached")

    async def delete_volumes(self, volume_ids: list[str]) -> None:
        existing = await self.describe_volumes(volume_ids=volume_ids) if volume_ids else []
        for volume in existing:
            await self.detach_volume(volume.volume_id)
            try:
                await self._call("delete_volume", VolumeId=volume.volume_id)
            except ProviderError as exc:
                if "NotFound" not in exc.code:
                    raise
            self._log.info("aws.volume_deleted", volume_id=volume.volume_id)
        for volume in existing:
            await self._wait_volume(volume.volume_id, lambda v: v is None, "to be deleted")

    # -- snapshots (EBS; backup) -------------------------------------------------------------------

    async def create_snapshot(self, volume_id: str, name: str, tags: Mapping[str, str]) -> Snapshot:
        """CreateSnapshot named by its Name tag, polled until ``completed`` (boto's waiter looks
        every 15 s; the shared poll starts short). Not a lookup: the step looks the name up first."""
        tag_list = [{"Key": NAME_TAG, "Value": name}]
        tag_list += [{"Key": str(k), "Value": str(v)} for k, v in tags.items() if k != NAME_TAG]
        reply = await self._call(
            "create_snapshot",
            idempotent=False,
            VolumeId=volume_id,
            Description=name,
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list}],
        )
        snapshot_id = str(reply["SnapshotId"])
        self._log.info("aws.snapshot_created", snapshot_id=snapshot_id, volume_id=volume_id, name=name)
        found: list[Snapshot] = []

        async def completed() -> bool | None:
            found[:] = await self.describe_snapshots(snapshot_ids=[snapshot_id])
            if not found:
                raise ProviderError(f"aws snapshot {snapshot_id} vanished", code="InvalidSnapshot.NotFound")
            if found[0].status == "error":
                raise ProviderError(
                    f"aws snapshot {snapshot_id} of {volume_id} failed", code="snapshot-error"
                )
            return True if found[0].status == "available" else None

        await wait_for(completed, timeout=self.wait_timeout, what=f"aws snapshot {snapshot_id} to complete")
        return found[0]

    async def describe_snapshots(
        self, *, snapshot_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Snapshot]:
        if snapshot_ids is not None and not snapshot_ids:
            return []
        filters: list[dict[str, Any]] = []
        if name_prefix:
            filters.append({"Name": f"tag:{NAME_TAG}", "Values": [name_prefix + "*"]})
        if snapshot_ids is not None:
            filters.append({"Name": "snapshot-id", "Values": list(dict.fromkeys(snapshot_ids))})
        found: list[Snapshot] = []
        token = ""
        while True:
            params: dict[str, Any] = {"OwnerIds": ["self"], "Filters": filters, "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            reply = await self._call("describe_snapshots", **params)
            found.extend(to_snapshot(item) for item in reply.get("Snapshots") or [])
            token = str(reply.get("NextToken") or "")
            if not token:
                break
        return [
            s for s in found if s.status != "deleted" and (not name_prefix or s.name.startswith(name_prefix))
        ]

    async def delete_snapshots(self, snapshot_ids: list[str]) -> None:
        existing = await self.describe_snapshots(snapshot_ids=snapshot_ids) if snapshot_ids else []
        for snapshot in existing:
            try:
                await self._call("delete_snapshot", SnapshotId=snapshot.snapshot_id)
            except ProviderError as exc:
                if "NotFound" not in exc.code:
                    raise
            self._log.info("aws.snapshot_deleted", snapshot_id=snapshot.snapshot_id)

    # -- resize ----------------------------------------------------------------------------------
    # ModifyInstanceAttribute changes the type of a stopped instance only (EC2 refuses a running
    # one: IncorrectInstanceState), so the runtime stops it first. ModifyVolume grows an attached
    # EBS volume while its instance runs; the guest sees the size at once, and the modification
    # counts as done from "optimizing" (the size is usable, EBS still tunes the volume behind it).

    online_resize: ClassVar[bool] = False
    online_volume_growth: ClassVar[bool] = True

    async def resize_instance(
        self, instance_id: str, *, cpu: int, memory: int, instance_type: str = ""
    ) -> None:
        wanted = instance_type or choose(cpu, memory, self.instance_types)
        current = (await self._by_ids([instance_id])).get(instance_id)
        if current is None or current.status in ("terminated",):
            raise ProviderError(f"aws: instance {instance_id} not found", code="InvalidInstanceID.NotFound")
        if current.raw.get("InstanceType") == wanted:
            return
        if current.status != "stopped":  # EC2's own refusal, said before asking it
            raise ProviderError(
                f"aws modify_instance_attribute: IncorrectInstanceState: instance {instance_id} is "
                f"{current.status}, not stopped",
                code="IncorrectInstanceState",
            )
        await self._call("modify_instance_attribute", InstanceId=instance_id, InstanceType={"Value": wanted})
        self._log.info("aws.instance_resized", instance_id=instance_id, instance_type=wanted)

    async def grow_volume(self, volume_id: str, size: int) -> Volume:
        volume = await self._volume(volume_id)
        if volume is None:
            raise ProviderError(f"aws: volume {volume_id} not found", code="InvalidVolume.NotFound")
        if volume.size == size:
            return volume
        if size < volume.size:  # EC2's own refusal, said before asking it
            raise ProviderError(
                f"aws modify_volume: InvalidParameterValue: new size {size} GiB is smaller than "
                f"the volume's {volume.size} GiB",
                code="InvalidParameterValue",
            )
        await self._call("modify_volume", idempotent=False, VolumeId=volume_id, Size=size)
        self._log.info("aws.volume_modified", volume_id=volume_id, size=size)

        async def modified() -> bool | None:
            reply = await self._call("describe_volumes_modifications", VolumeIds=[volume_id])
            states = [
                str(m.get("ModificationState") or "")
                for m in reply.get("VolumesModifications") or []
                if int(m.get("TargetSize") or 0) == size
            ]
            if "failed" in states:
                raise ProviderError(f"aws: the modification of volume {volume_id} to {size} GiB failed")
            return True if {"optimizing", "completed"} & set(states) else None

        await wait_for(modified, timeout=self.wait_timeout, what=f"aws volume {volume_id} to {size} GiB")
        grown = await self._volume(volume_id)
        if grown is None:
            raise ProviderError(
                f"aws: volume {volume_id} vanished while modified", code="InvalidVolume.NotFound"
            )
        return grown


SNAPSHOT_STATES: dict[str, SnapshotStatus] = {
    "pending": "pending",
    "completed": "available",
    "error": "error",
    "recoverable": "error",
    "recovering": "pending",
}


def to_snapshot(item: Mapping[str, Any]) -> Snapshot:
    tags = {str(t["Key"]): str(t.get("Value", "")) for t in item.get("Tags") or [] if "Key" in t}
    created = item.get("StartTime")
    return Snapshot(
        snapshot_id=str(item["SnapshotId"]),
        name=tags.pop(NAME_TAG, ""),
        volume_id=str(item.get("VolumeId") or ""),
        size=int(item.get("VolumeSize") or 0),
        status=SNAPSHOT_STATES.get(str(item.get("State", "")), "unknown"),
        created=str(created.isoformat()) if created is not None and hasattr(created, "isoformat") else "",
        tags=tags,
        raw=dict(item),
    )
