"""An EC2 face on the same simulated VMs: the Query API (``POST /ec2/``, Version 2016-11-15) as
much as pitrix's AWS provider and the AWS CLI's everyday calls need.

Every request is checked as EC2 checks it: Signature Version 4 recomputed with botocore's signer
(:mod:`simulator.ec2_sigv4`), the form read against botocore's model of the operation (unknown
parameters refused), answers and errors in EC2's XML (:mod:`simulator.ec2_wire`). Instances are
the fleet's VMs (what one face creates the others see); what EC2 has and the fleet lacks (tags,
instance type, key name, subnet, security groups, the client token that made an instance) is kept
here by id. The region is the simulator's zone; its one availability zone is that name plus ``a``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from botocore.model import ServiceModel

from pitrix.logs import get_logger
from pitrix.providers.aws.instance_types import DEFAULT_TYPES
from simulator.ec2_sigv4 import authenticate
from simulator.ec2_volumes import Ec2Volumes
from simulator.ec2_wire import API_VERSION, Ec2Error, answer, error_body, load_model, operation, parse
from simulator.errors import BAD_STATUS, NOT_FOUND, QUOTA_EXCEEDED, THROTTLED, ApiError
from simulator.faults import Faults
from simulator.fleet import Fleet, RunRequest
from simulator.vm import VM

OWNER_ID = "123456789012"
VPC_ID = "vpc-0sim"
DEFAULT_SUBNET = "subnet-0sim"
DEFAULT_GROUP = "sg-0sim"
TAG_KEY = re.compile(r"^.{1,128}$", re.DOTALL)
KEY_NAME = re.compile(r"^[ -~]{1,255}$")
SUBNET_ID = re.compile(r"^subnet-[0-9a-z]{1,32}$")
GROUP_ID = re.compile(r"^sg-[0-9a-z]{1,32}$")
MAX_USERDATA = 16 * 1024  # EC2 refuses user data over 16 KiB (before base64)
# EC2 state (code, name) of a fleet VM, by (status, transition).
STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}

INSTANCE_FILTERS = frozenset(
    {"instance-id", "instance-state-name", "image-id", "private-ip-address", "availability-zone"}
)

Action = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


def ec2_state(vm: VM) -> str:
    if vm.status in ("terminated", "ceased"):
        return "terminated"
    if vm.transition_status == "terminating":
        return "shutting-down"
    if vm.status == "pending" or vm.transition_status in ("creating", "starting"):
        return "pending"
    if vm.transition_status == "stopping":
        return "stopping"
    return "running" if vm.status == "running" else "stopped"


@dataclass
class InstanceExtras:
    """What EC2 keeps about an instance that the fleet's VM does not."""

    instance_type: str
    reservation_id: str
    key_name: str = ""
    subnet_id: str = DEFAULT_SUBNET
    group_ids: list[str] = field(default_factory=lambda: [DEFAULT_GROUP])
    client_token: str = ""


@dataclass
class Launch:
    """A ClientToken's launch: the same token with the same parameters answers with it again."""

    digest: str
    reservation_id: str
    instance_ids: list[str]


class Ec2Api:
    def __init__(self, fleet: Fleet, credentials: Mapping[str, str], zone: str, faults: Faults) -> None:
        self.fleet = fleet
        self.region = zone
        self.availability_zone = zone + "a"
        self.faults = faults
        self._secrets = {credentials["access_key_id"]: credentials["secret_access_key"]}
        self._model: ServiceModel | None = None
        self.tags: dict[str, dict[str, str]] = {}  # resource id -> tags (Name included)
        self._instances: dict[str, InstanceExtras] = {}
        self._launches: dict[str, Launch] = {}  # ClientToken -> its launch
        self._keypairs: dict[str, str] = {}  # EC2 key name -> the fleet's key pair id
        self.types = {name: (cpu, memory) for name, cpu, memory in DEFAULT_TYPES}
        self.volumes = Ec2Volumes(self)
        self._log = get_logger("simulator.ec2", region=zone)
        self._actions: dict[str, Action] = {
            "DescribeAvailabilityZones": self.describe_availability_zones,
            "DescribeImages": self.describe_images,
            "RunInstances": self.run_instances,
            "DescribeInstances": self.describe_instances,
            "TerminateInstances": self.terminate_instances,
            "StopInstances": self.stop_instances,
            "StartInstances": self.start_instances,
            "CreateTags": self.create_tags,
            "DeleteTags": self.delete_tags,
            "ImportKeyPair": self.import_key_pair,
            "DescribeKeyPairs": self.describe_key_pairs,
            "DeleteKeyPair": self.delete_key_pair,
            "GetConsoleOutput": self.get_console_output,
            "ModifyInstanceAttribute": self.modify_instance_attribute,
            **self.volumes.actions(),
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/ec2/", self.handle), web.post("/ec2", self.handle)]

    # -- plumbing ----------------------------------------------------------------------------------

    async def model(self) -> ServiceModel:
        """botocore's EC2 model, read at the first request (a large file: in a thread)."""
        if self._model is None:
            self._model = await asyncio.to_thread(load_model)
        return self._model

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = ""
        try:
            authenticate(
                method=request.method,
                url=str(request.url),
                headers=request.headers,
                body=body,
                secrets=self._secrets,
                region=self.region,
            )
            form = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
            action = form.get("Action", "")
            if not action:
                raise Ec2Error("MissingAction", "The request must contain the parameter Action")
            if form.get("Version") != API_VERSION:
                raise Ec2Error("NoSuchVersion", f"An invalid version {form.get('Version')!r} was given")
            op = operation(await self.model(), action)
            handler = self._actions.get(action)
            if handler is None:
                raise Ec2Error("UnsupportedOperation", f"The simulator does not implement {action}.")
            params = parse(form, op)
            fault = self.faults.take(action)
            if fault is not None:
                if fault.ret_code == THROTTLED:
                    raise Ec2Error("RequestLimitExceeded", "Request limit exceeded.", 503)
                raise Ec2Error("InternalError", "An internal error has occurred.", 500)
            result = handler(params)
            if inspect.isawaitable(result):
                result = await result
            # Writing a thousand instances' XML takes a while: not on the loop the VMs' SSH runs on.
            body = await asyncio.to_thread(answer, op, result)
            return web.Response(body=body, content_type="text/xml", charset="utf-8")
        except ApiError as exc:  # the fleet's refusal, in EC2's words
            code, status = {
                NOT_FOUND: ("InvalidParameterValue", 400),
                BAD_STATUS: ("IncorrectState", 400),
                QUOTA_EXCEEDED: ("InsufficientInstanceCapacity", 500),
            }.get(exc.ret_code, ("InvalidParameterValue", 400))
            return self._refuse(action, Ec2Error(code, exc.message, status))
        except Ec2Error as exc:
            return self._refuse(action, exc)
        except Exception:
            self._log.exception("ec2.internal_error", action=action)
            return self._refuse(action, Ec2Error("InternalError", "An internal error has occurred.", 500))

    def _refuse(self, action: str, error: Ec2Error) -> web.Response:
        self._log.info("ec2.refused", action=action, code=error.code, message=error.message)
        return web.Response(
            body=error_body(error), status=error.status, content_type="text/xml", charset="utf-8"
        )

    # -- tags and filters --------------------------------------------------------------------------

    def tag_list(self, resource_id: str) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in sorted(self.tags.get(resource_id, {}).items())]

    @staticmethod
    def check_tags(tags: list[dict[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for tag in tags:
            key, value = tag.get("Key"), tag.get("Value", "")
            if not isinstance(key, str) or not TAG_KEY.match(key) or key.startswith("aws:"):
                raise Ec2Error("InvalidParameterValue", f"Tag key {key!r} must be 1-128 characters, not aws:")
            if len(value) > 256:
                raise Ec2Error("InvalidParameterValue", f"Tag value of {key} is longer than 256 characters")
            found[key] = value
        return found

    def launch_tags(self, specs: list[dict[str, Any]], kind: str) -> dict[str, str]:
        """The tags of a ``TagSpecifications`` for resources of ``kind``."""
        tags: dict[str, str] = {}
        for spec in specs:
            resource = spec.get("ResourceType")
            if resource != kind:
                raise Ec2Error(
                    "InvalidParameterValue", f"'{resource}' is not a valid taggable resource type here"
                )
            tags.update(self.check_tags(spec.get("Tags") or []))
        return tags

    @staticmethod
    def check_filters(filters: list[dict[str, Any]], names: frozenset[str]) -> list[dict[str, Any]]:
        """The filters, each one this call knows (EC2 refuses an unknown one even when nothing
        would be filtered)."""
        for item in filters:
            name = str(item.get("Name", ""))
            if name not in names and not name.startswith("tag:") and name != "tag-key":
                raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
        return filters

    @staticmethod
    def matches(filters: list[dict[str, Any]], fields: Callable[[str], list[str] | None]) -> bool:
        """Whether a resource passes every filter (any of a filter's values; ``*`` and ``?`` wild).

        Plain values are looked up in a set: 200 instance ids against thousands of VMs stay cheap."""
        for item in filters:
            name = str(item.get("Name", ""))
            have = fields(name)
            if have is None:
                raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
            values = [str(v) for v in item.get("Values") or []]
            exact = {v for v in values if "*" not in v and "?" not in v}
            if any(h in exact for h in have):
                continue
            patterns = [_wildcard(v) for v in values if v not in exact]
            if not any(p.match(h) for p in patterns for h in have):
                return False
        return True

    def tag_field(self, resource_id: str, name: str) -> list[str] | None:
        """A ``tag:Key`` / ``tag-key`` filter's value for a resource; None for other names."""
        tags = self.tags.get(resource_id, {})
        if name.startswith("tag:"):
            key = name[4:]
            return [tags[key]] if key in tags else []
        if name == "tag-key":
            return list(tags)
        return None

    @staticmethod
    def page(items: list[Any], params: Mapping[str, Any], limit: int = 1000) -> tuple[list[Any], str]:
        """One page (``MaxResults``, ``NextToken``: the offset of the next page)."""
        size = int(params.get("MaxResults") or limit)
        token = str(params.get("NextToken") or "0")
        if not token.isdigit():
            raise Ec2Error("InvalidParameterValue", f"Invalid NextToken {token!r}")
        start = int(token)
        more = start + size < len(items)
        return items[start : start + size], str(start + size) if more else ""

    # -- instances ---------------------------------------------------------------------------------

    def vm(self, instance_id: str, *, live: bool = False) -> VM:
        vm = self.fleet.vm(instance_id)
        if vm is None or (live and vm.status in ("terminated", "ceased")):
            raise Ec2Error("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
        return vm

    def _extras(self, vm: VM) -> InstanceExtras:
        extras = self._instances.get(vm.instance_id)
        if extras is None:  # made by another face: EC2 sees it with the type of its size
            extras = InstanceExtras(self._type_of(vm.cpu, vm.memory), "r-" + vm.instance_id[2:])
            self._instances[vm.instance_id] = extras
        return extras

    def _type_of(self, cpu: int, memory: int) -> str:
        for name, (type_cpu, type_memory) in self.types.items():
            if (type_cpu, type_memory) == (cpu, memory):
                return name
        return f"sim.c{cpu}m{memory}"

    def instance(self, vm: VM) -> dict[str, Any]:
        extras = self._extras(vm)
        state = ec2_state(vm)
        alive = state != "terminated"
        tags = dict(self.tags.get(vm.instance_id, {}))
        if vm.name:
            tags.setdefault("Name", vm.name)
        item: dict[str, Any] = {
            "InstanceId": vm.instance_id,
            "ImageId": vm.image_id,
            "State": {"Code": STATE_CODES[state], "Name": state},
            "PrivateDnsName": f"ip-{vm.ip.replace('.', '-')}.{self.region}.compute.internal" if alive else "",
            "PublicDnsName": "",
            "StateTransitionReason": "",
            "AmiLaunchIndex": 0,
            "InstanceType": extras.instance_type,
            "LaunchTime": vm.create_time,
            "Placement": {"AvailabilityZone": self.availability_zone, "GroupName": "", "Tenancy": "default"},
            "Monitoring": {"State": "disabled"},
            "Architecture": "x86_64",
            "RootDeviceType": "ebs",
            "RootDeviceName": "/dev/xvda",
            "BlockDeviceMappings": self.volumes.block_devices(vm.instance_id),
            "Hypervisor": "xen",
            "VirtualizationType": "hvm",
            "EbsOptimized": False,
            "SecurityGroups": [{"GroupId": g, "GroupName": g} for g in extras.group_ids] if alive else [],
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
            "ClientToken": extras.client_token,
        }
        if alive:
            item.update(PrivateIpAddress=vm.ip, SubnetId=extras.subnet_id, VpcId=VPC_ID)
        if extras.key_name:
            item["KeyName"] = extras.key_name
        return item

    def _reservation(self, reservation_id: str, vms: list[VM]) -> dict[str, Any]:
        return {
            "ReservationId": reservation_id,
            "OwnerId": OWNER_ID,
            "Groups": [],
            "Instances": [self.instance(vm) for vm in vms],
        }

    def run_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in ("ImageId", "MinCount", "MaxCount"):
            if name not in params:
                raise Ec2Error("MissingParameter", f"The request must contain the parameter {name}")
        token = str(params.get("ClientToken") or "")
        if len(token) > 64:
            raise Ec2Error("InvalidParameterValue", "ClientToken is longer than 64 characters")
        digest = hashlib.sha256(
            json.dumps(
                {k: v for k, v in params.items() if k != "ClientToken"}, sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        if token and token in self._launches:
            launch = self._launches[token]
            if launch.digest != digest:
                raise Ec2Error(
                    "IdempotentParameterMismatch",
                    f"The client token {token} was used before with other parameters",
                )
            vms = [self.vm(i) for i in launch.instance_ids]
            if all(vm.status in ("terminated", "ceased") for vm in vms):
                raise Ec2Error(
                    "IdempotentInstanceTerminated",
                    f"The instances launched with client token {token} have been terminated",
                )
            self._log.info("ec2.run_repeated", token=token, instance_ids=launch.instance_ids)
            return self._reservation(launch.reservation_id, vms)
        request, extras, tags = self._run_request(params)
        ids, _ = self.fleet.run(request)
        reservation_id = "r-" + ids[0][2:]
        for iid in ids:
            self._instances[iid] = InstanceExtras(
                extras.instance_type,
                reservation_id,
                extras.key_name,
                extras.subnet_id,
                extras.group_ids,
                token,
            )
            self.tags[iid] = dict(tags)
        if token:
            self._launches[token] = Launch(digest, reservation_id, ids)
        self._log.info("ec2.run", instance_ids=ids, image=request.image_id, token=token)
        return self._reservation(reservation_id, [self.vm(i) for i in ids])

    def _run_request(self, params: Mapping[str, Any]) -> tuple[RunRequest, InstanceExtras, dict[str, str]]:
        """RunInstances' parameters, checked as EC2 checks them, as a fleet RunRequest."""
        low, high = int(params["MinCount"]), int(params["MaxCount"])
        if low < 1 or high < low:
            raise Ec2Error("InvalidParameterValue", f"MinCount {low} and MaxCount {high} make no range")
        image = str(params["ImageId"])
        if image not in self.fleet.images.names():
            raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{image}]' does not exist")
        instance_type = str(params.get("InstanceType") or "m1.small")
        if instance_type not in self.types:
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.")
        key_name = str(params.get("KeyName") or "")
        if key_name and key_name not in self._keypairs:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{key_name}' does not exist")
        subnet = str(params.get("SubnetId") or DEFAULT_SUBNET)
        if not SUBNET_ID.match(subnet):
            raise Ec2Error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet}' does not exist")
        groups = [str(g) for g in params.get("SecurityGroupIds") or [DEFAULT_GROUP]]
        for group in groups:
            if not GROUP_ID.match(group):
                raise Ec2Error("InvalidGroup.NotFound", f"The security group '{group}' does not exist")
        zone = str((params.get("Placement") or {}).get("AvailabilityZone") or self.availability_zone)
        if zone != self.availability_zone:
            raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        userdata = None
        if params.get("UserData"):
            userdata = _userdata(str(params["UserData"]))
        tags = self.launch_tags(params.get("TagSpecifications") or [], "instance")
        cpu, memory = self.types[instance_type]
        request = RunRequest(
            image_id=image,
            count=high,  # as many as asked for at most; the pool refuses all if it has fewer
            name=tags.get("Name", ""),
            cpu=cpu,
            memory=memory,
            login_mode="keypair" if key_name else "passwd",
            keypair_ids=(self._keypairs[key_name],) if key_name else (),
            userdata=userdata,
        )
        return request, InstanceExtras(instance_type, "", key_name, subnet, groups), tags

    def describe_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        ids = [str(i) for i in params.get("InstanceIds") or []]
        for iid in ids:
            self.vm(iid)  # EC2 names an unknown id in InstanceIds (a filter just matches nothing)
        filters = self.check_filters(params.get("Filters") or [], INSTANCE_FILTERS)
        # Oldest first, from the ledger (cheap per VM, where a QingCloud description is not).
        order = list(dict.fromkeys(ids)) if ids else [entry["instance_id"] for entry in self.fleet.ledger()]
        vms = [vm for vm in (self.fleet.vm(iid) for iid in order) if vm is not None]

        def fields(vm: VM) -> Callable[[str], list[str] | None]:
            def value(name: str) -> list[str] | None:
                if name == "instance-id":
                    return [vm.instance_id]
                if name == "instance-state-name":
                    return [ec2_state(vm)]
                if name == "image-id":
                    return [vm.image_id]
                if name == "private-ip-address":
                    return [vm.ip]
                if name == "availability-zone":
                    return [self.availability_zone]
                if name == "tag:Name" and vm.name and "Name" not in self.tags.get(vm.instance_id, {}):
                    return [vm.name]
                return self.tag_field(vm.instance_id, name)

            return value

        vms = [vm for vm in vms if self.matches(filters, fields(vm))]
        page, token = self.page(vms, params)
        reservations: dict[str, list[VM]] = {}
        for vm in page:
            reservations.setdefault(self._extras(vm).reservation_id, []).append(vm)
        result: dict[str, Any] = {"Reservations": [self._reservation(r, v) for r, v in reservations.items()]}
        if token:
            result["NextToken"] = token
        return result

    def _changes(self, vms: list[VM], before: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "InstanceId": vm.instance_id,
                "PreviousState": {
                    "Code": STATE_CODES[before[vm.instance_id]],
                    "Name": before[vm.instance_id],
                },
                "CurrentState": {"Code": STATE_CODES[ec2_state(vm)], "Name": ec2_state(vm)},
            }
            for vm in vms
        ]

    def _instance_ids(self, params: Mapping[str, Any]) -> list[VM]:
        ids = [str(i) for i in params.get("InstanceIds") or []]
        if not ids:
            raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
        return [self.vm(i) for i in dict.fromkeys(ids)]

    def terminate_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        vms = self._instance_ids(params)
        before = {vm.instance_id: ec2_state(vm) for vm in vms}
        todo = [vm.instance_id for vm in vms if before[vm.instance_id] not in ("terminated", "shutting-down")]
        if todo:
            self.fleet.terminate(todo)
        for iid in todo:
            self.volumes.forget_instance(iid)
        return {"TerminatingInstances": self._changes(vms, before)}

    def stop_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        allowed = ("running", "stopping", "stopped")
        return self._transition(params, allowed, "running", self.fleet.stop, "stopped", "StoppingInstances")

    def start_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        allowed = ("pending", "running", "stopped")
        return self._transition(params, allowed, "stopped", self.fleet.start, "started", "StartingInstances")

    def _transition(
        self,
        params: Mapping[str, Any],
        allowed: tuple[str, ...],
        acted_on: str,
        act: Callable[[list[str]], object],
        verb: str,
        key: str,
    ) -> dict[str, Any]:
        """StopInstances and StartInstances: refused whole when an instance is in none of the
        ``allowed`` states; ``act`` is asked for those in ``acted_on`` only (the others are on their
        way or there already), and the answer under ``key`` lists each instance's change."""
        vms = self._instance_ids(params)
        before = {vm.instance_id: ec2_state(vm) for vm in vms}
        for vm in vms:
            if before[vm.instance_id] not in allowed:
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{vm.instance_id}' is not in a state from which it can be {verb}.",
                )
        todo = [vm.instance_id for vm in vms if before[vm.instance_id] == acted_on]
        if todo:
            act(todo)
        return {key: self._changes(vms, before)}

    def modify_instance_attribute(self, params: dict[str, Any]) -> dict[str, Any]:
        """The instance type of a stopped instance (the one attribute pitrix changes)."""
        vm = self.vm(str(params.get("InstanceId") or ""), live=True)
        wanted = (params.get("InstanceType") or {}).get("Value")
        if not wanted:
            raise Ec2Error("MissingParameter", "The request must contain an attribute to modify")
        if wanted not in self.types:
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{wanted}' for InstanceType.")
        if ec2_state(vm) != "stopped":
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{vm.instance_id}' is not in the 'stopped' state.",
            )
        cpu, memory = self.types[wanted]
        self.fleet.resize_instances([vm.instance_id], cpu, memory)
        self._extras(vm).instance_type = wanted
        return {}

    def get_console_output(self, params: dict[str, Any]) -> dict[str, Any]:
        """The console (cloud-init's host-key block among it), base64 as EC2 sends it; nothing
        before the instance has booted."""
        vm = self.vm(str(params.get("InstanceId") or ""))
        output = str(self.fleet.console(vm.instance_id)["output"]) if vm.status == "running" else ""
        result: dict[str, Any] = {"InstanceId": vm.instance_id, "Timestamp": vm.status_time}
        if output:
            result["Output"] = base64.b64encode(output.encode()).decode()
        return result

    # -- tags --------------------------------------------------------------------------------------

    def _taggable(self, resource_id: str) -> None:
        if resource_id.startswith("i-"):
            self.vm(resource_id, live=True)
        elif not self.volumes.knows(resource_id):
            raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")

    def create_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        resources = [str(r) for r in params.get("Resources") or []]
        tags = self.check_tags(params.get("Tags") or [])
        for resource in resources:
            self._taggable(resource)
        for resource in resources:
            self.tags.setdefault(resource, {}).update(tags)
            vm = self.fleet.vm(resource)
            if vm is not None and "Name" in tags:
                vm.name = tags["Name"]
        return {}

    def delete_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        for resource in [str(r) for r in params.get("Resources") or []]:
            self._taggable(resource)
            for tag in params.get("Tags") or []:
                held = self.tags.get(resource, {})
                if tag.get("Key") in held and ("Value" not in tag or held[tag["Key"]] == tag["Value"]):
                    del held[tag["Key"]]
        return {}

    # -- key pairs ---------------------------------------------------------------------------------

    def _key_pair(self, name: str) -> dict[str, Any]:
        pair = self.fleet.keypairs.get(self._keypairs[name])
        return {
            "KeyName": name,
            "KeyPairId": "key-" + pair.keypair_id[3:],
            "KeyType": "ed25519" if pair.encrypt_method == "ssh-ed25519" else "rsa",
            "KeyFingerprint": pair.public_key.get_fingerprint("md5").removeprefix("MD5:"),
            "CreateTime": pair.create_time,
            "Tags": [],
        }

    def import_key_pair(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("KeyName") or "")
        material = params.get("PublicKeyMaterial")
        if not name or material is None:
            raise Ec2Error("MissingParameter", "The request must contain KeyName and PublicKeyMaterial")
        if not KEY_NAME.match(name):
            raise Ec2Error("InvalidParameterValue", "Key names are 1-255 ASCII characters")
        if name in self._keypairs:
            raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
        try:
            pair, _ = self.fleet.keypairs.create(
                name=name, mode="user", encrypt_method="ssh-ed25519", public_key=bytes(material).decode()
            )
        except (ApiError, UnicodeDecodeError):
            raise Ec2Error("InvalidKey.Format", "Key is not in valid OpenSSH public key format") from None
        self._keypairs[name] = pair.keypair_id
        found = self._key_pair(name)
        return {k: found[k] for k in ("KeyName", "KeyPairId", "KeyFingerprint", "Tags")}

    def describe_key_pairs(self, params: dict[str, Any]) -> dict[str, Any]:
        names = [str(n) for n in params.get("KeyNames") or []]
        for name in names:
            if name not in self._keypairs:
                raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
        chosen = names or list(self._keypairs)

        def fields(name: str) -> Callable[[str], list[str] | None]:
            return lambda f: [name] if f == "key-name" else None

        filters = self.check_filters(params.get("Filters") or [], frozenset({"key-name"}))
        return {"KeyPairs": [self._key_pair(n) for n in chosen if self.matches(filters, fields(n))]}

    def delete_key_pair(self, params: dict[str, Any]) -> dict[str, Any]:
        """Forget a key pair; instances launched with it keep the key, as on EC2 (no error when
        the name is unknown, as EC2 answers too)."""
        name = str(params.get("KeyName") or "")
        keypair_id = self._keypairs.pop(name, None)
        if keypair_id is not None:
            pair = self.fleet.keypairs.get(keypair_id)
            if not pair.instance_ids:
                self.fleet.keypairs.delete([keypair_id])
        return {"Return": True}

    # -- region ------------------------------------------------------------------------------------

    def describe_availability_zones(self, params: dict[str, Any]) -> dict[str, Any]:
        zone = {
            "ZoneName": self.availability_zone,
            "ZoneId": self.region + "-az1",
            "State": "available",
            "RegionName": self.region,
            "ZoneType": "availability-zone",
            "Messages": [],
        }
        return {"AvailabilityZones": [zone]}

    def describe_images(self, params: dict[str, Any]) -> dict[str, Any]:
        """The simulator's images, each an AMI whose id is its name (images carry the agent)."""
        wanted = [str(i) for i in params.get("ImageIds") or []]
        names = self.fleet.images.names()
        for image in wanted:
            if image not in names:
                raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{image}]' does not exist")
        images = [
            {
                "ImageId": name,
                "Name": name,
                "State": "available",
                "OwnerId": OWNER_ID,
                "Public": True,
                "Architecture": "x86_64",
                "ImageType": "machine",
                "RootDeviceType": "ebs",
                "RootDeviceName": "/dev/xvda",
                "VirtualizationType": "hvm",
                "Hypervisor": "xen",
            }
            for name in (wanted or names)
        ]
        return {"Images": images}


def _wildcard(value: str) -> re.Pattern[str]:
    """An EC2 filter value with ``*`` (any run) and ``?`` (any one character) as a pattern."""
    return re.compile("^" + re.escape(value).replace(r"\*", ".*").replace(r"\?", ".") + "$", re.DOTALL)


def _userdata(encoded: str) -> bytes:
    try:
        data = base64.b64decode(encoded.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise Ec2Error("InvalidUserData.Malformed", "User data must be base64 encoded.") from None
    if len(data) > MAX_USERDATA:
        raise Ec2Error("InvalidParameterValue", f"User data is limited to {MAX_USERDATA} bytes.")
    return data
