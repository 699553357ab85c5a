"""The QingCloud API v1 at ``/iaas/``: parameters in, QingCloud's response shapes out.

Like QingCloud, every answer is HTTP 200 with a ``ret_code``; errors carry a ``message``. The
signature is checked before anything else, with the same signer the provider uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pitrix.logs import get_logger
from simulator import params as p
from simulator.auth import authenticate
from simulator.errors import INTERNAL_ERROR, ApiError, invalid
from simulator.faults import Faults
from simulator.fleet import Fleet, RunRequest
from simulator.snapshots import STATUSES as SNAPSHOT_STATUSES
from simulator.userdata import DATA_DIR, EXEC_FILE, Attachments, from_params
from simulator.vips import Vips
from simulator.volumes import STATUSES as VOLUME_STATUSES

Action = Callable[[Mapping[str, str]], dict[str, Any]]
INSTANCE_STATUSES = {"pending", "running", "stopped", "suspended", "terminated", "ceased"}


class QingCloudApi:
    def __init__(self, fleet: Fleet, zone: str, secrets: Mapping[str, str], faults: Faults) -> None:
        self.fleet = fleet
        self.zone = zone
        self.secrets = secrets
        self.faults = faults
        self._log = get_logger("simulator.api", zone=zone)
        self.vips = Vips(fleet.pool)
        self._actions: dict[str, Action] = {
            "RunInstances": self.run_instances,
            "DescribeInstances": self.describe_instances,
            "TerminateInstances": self.terminate_instances,
            "StartInstances": self.start_instances,
            "StopInstances": self.stop_instances,
            "RestartInstances": self.restart_instances,
            "DescribeJobs": self.describe_jobs,
            "CreateKeyPair": self.create_keypair,
            "DescribeKeyPairs": self.describe_keypairs,
            "AttachKeyPairs": self.attach_keypairs,
            "DetachKeyPairs": self.detach_keypairs,
            "DeleteKeyPairs": self.delete_keypairs,
            "CreateTag": self.create_tag,
            "DescribeTags": self.describe_tags,
            "AttachTags": self.attach_tags,
            "DetachTags": self.detach_tags,
            "DeleteTags": self.delete_tags,
            "CreateVolumes": self.create_volumes,
            "DescribeVolumes": self.describe_volumes,
            "AttachVolumes": self.attach_volumes,
            "DetachVolumes": self.detach_volumes,
            "DeleteVolumes": self.delete_volumes,
            "CreateSnapshots": self.create_snapshots,
            "DescribeSnapshots": self.describe_snapshots,
            "DeleteSnapshots": self.delete_snapshots,
            "CreateVolumeFromSnapshot": self.create_volume_from_snapshot,
            "ResizeInstances": self.resize_instances,
            "ResizeVolumes": self.resize_volumes,
            "AllocateVips": self.allocate_vips,
            "DescribeVips": self.describe_vips,
            "ReleaseVips": self.release_vips,
        }
        self.attachments = Attachments()  # UploadUserDataAttachment's archives, for tar userdata
        self._actions.update(
            UploadUserDataAttachment=self.upload_userdata_attachment, DescribeVxNets=self.describe_vxnets
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/iaas/", self.handle), web.post("/iaas/", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        action = params.get("action", "")
        try:
            body = self.dispatch(request.method, request.path, params)
        except ApiError as exc:
            self._log.info("api.refused", action=action, ret_code=exc.ret_code, message=exc.message)
            body = exc.body()
        except Exception as exc:
            self._log.exception("api.internal_error", action=action)
            body = ApiError(INTERNAL_ERROR, f"InternalError, {type(exc).__name__}").body()
        return web.json_response(body)

    def dispatch(self, method: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        authenticate(params, method=method, path=path, secrets=self.secrets)
        action = p.required(params, "action")
        zone = p.required(params, "zone")
        if zone != self.zone:
            raise invalid(f"parameter [zone] [{zone}] does not exist, this cloud has [{self.zone}]")
        handler = self._actions.get(action)
        if handler is None:
            raise invalid(f"action [{action}] is not supported")
        fault = self.faults.take(action)
        if fault is not None:
            raise ApiError(fault.ret_code, fault.message)
        reply = handler(params)
        return {"action": f"{action}Response", "ret_code": 0, **reply}

    def run_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        login_mode = p.required(params, "login_mode")
        keypairs: tuple[str, ...] = ()
        if login_mode == "keypair":
            keypairs = (p.required(params, "login_keypair"),)
        elif login_mode == "passwd":
            p.required(params, "login_passwd")
        else:
            raise invalid(f"parameter [login_mode] should be keypair or passwd, got [{login_mode}]")
        vxnet_id = self._vxnet(params)
        userdata = from_params(params, self.attachments)
        sized = instance_type_size(params["instance_type"]) if params.get("instance_type") else None
        request = RunRequest(
            image_id=p.required(params, "image_id"),
            count=p.integer(params, "count", 1, low=1, high=100),
            name=params.get("instance_name", ""),
            cpu=sized[0] if sized else p.integer(params, "cpu", 1, low=1, high=64),
            memory=sized[1] if sized else p.integer(params, "memory", 1024, low=128, high=1024 * 1024),
            vxnet_id=vxnet_id,
            login_mode=login_mode,
            keypair_ids=keypairs,
            userdata=userdata.value if userdata else None,
            userdata_kind=userdata.kind if userdata else "exec",
            userdata_dir=userdata.directory if userdata else DATA_DIR,
            userdata_file=userdata.exec_file if userdata else EXEC_FILE,
        )
        live = sum(1 for vm in self.fleet.ledger() if vm["status"] not in ("terminated", "ceased"))
        self.fleet.quotas.check_instances(live, request.count)
        ids, job = self.fleet.run(request)
        return {"instances": ids, "job_id": job.job_id}

    def _vxnet(self, params: Mapping[str, str]) -> str:
        """The vxnet a new instance joins. QingCloud would make an instance with no ``vxnets.N``
        that no network reaches; pitrix could never talk to it, so the simulator refuses that
        instead (the base network is ``vxnet-0``). One vxnet per instance here."""
        vxnets = p.indexed(params, "vxnets")
        if not vxnets:
            raise invalid("parameter [vxnets.1] should not be empty (vxnet-0 is the base network)")
        if len(vxnets) > 1:
            raise invalid(f"parameter [vxnets] has {len(vxnets)} networks; one is supported here")
        return self.fleet.vxnets.get(vxnets[0]).vxnet_id

    def upload_userdata_attachment(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``attachment_content`` (base64 zip/tar/tgz/tbz, 2 MiB at most) → ``attachment_id``."""
        return {"attachment_id": self.attachments.upload(params)}

    def describe_vxnets(self, params: Mapping[str, str]) -> dict[str, Any]:
        found = self.fleet.vxnets.describe(p.indexed(params, "vxnets"))
        return {"vxnet_set": [v.describe() for v in p.page(params, found)], "total_count": len(found)}

    def describe_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        statuses = p.statuses(params, INSTANCE_STATUSES)
        offset, limit = p.offset_limit(params)
        items, total = self.fleet.describe(
            instance_ids=p.indexed(params, "instances"),
            statuses=statuses,
            search_word=params.get("search_word", ""),
            offset=offset,
            limit=limit,
            verbose=p.integer(params, "verbose", 0, low=0, high=1),
        )
        return {"instance_set": items, "total_count": total}

    def _instances(self, params: Mapping[str, str]) -> list[str]:
        ids = p.indexed(params, "instances")
        if not ids:
            raise invalid("parameter [instances] should not be empty")
        return ids

    def terminate_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.terminate(self._instances(params)).job_id}

    def start_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.start(self._instances(params)).job_id}

    def stop_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        p.integer(params, "force", 0, low=0, high=1)  # processes are killed either way
        return {"job_id": self.fleet.stop(self._instances(params)).job_id}

    def restart_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.restart(self._instances(params)).job_id}

    # -- volumes -------------------------------------------------------------------------------------

    def _volumes(self, params: Mapping[str, str]) -> list[str]:
        ids = p.indexed(params, "volumes")
        if not ids:
            raise invalid("parameter [volumes] should not be empty")
        return ids

    def create_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``size`` (GB, required), ``volume_name``, ``volume_type``, ``count`` → ``volumes``, ``job_id``."""
        p.required(params, "size")
        size = p.integer(params, "size", 0, low=1, high=65536)
        p.integer(params, "volume_type", 0, low=0, high=10)  # every type is a directory here
        ids, job = self.fleet.create_volumes(
            params.get("volume_name", ""), size, p.integer(params, "count", 1, low=1, high=100)
        )
        return {"volumes": ids, "job_id": job.job_id}

    def describe_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        statuses = p.statuses(params, VOLUME_STATUSES)
        found = self.fleet.volumes.describe(
            volume_ids=p.indexed(params, "volumes"),
            statuses=statuses,
            search_word=params.get("search_word", ""),
            instance_id=params.get("instance_id", ""),
        )

        def instance_name(iid: str) -> str:
            vm = self.fleet.vm(iid)
            return vm.name if vm is not None else ""

        return {
            "volume_set": [v.describe(instance_name(v.instance_id)) for v in p.page(params, found)],
            "total_count": len(found),
        }

    def attach_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        volumes = self._volumes(params)
        job = self.fleet.attach_volumes(volumes, p.required(params, "instance"))
        return {"job_id": job.job_id}

    def detach_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        volumes = self._volumes(params)
        job = self.fleet.detach_volumes(volumes, p.required(params, "instance"))
        return {"job_id": job.job_id}

    def delete_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.delete_volumes(self._volumes(params)).job_id}

    # -- snapshots (docs.qingcloud.com/api/snapshot) ----------------------------------------------------

    def create_snapshots(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``resources.N`` (volume ids), ``snapshot_name``, ``is_full`` → ``snapshots``, ``job_id``."""
        resources = p.indexed(params, "resources")
        if not resources:
            raise invalid("parameter [resources] should not be empty")
        p.integer(params, "is_full", 0, low=0, high=1)  # every snapshot is a full copy here
        ids, job = self.fleet.create_snapshots(resources, params.get("snapshot_name", ""))
        return {"snapshots": ids, "job_id": job.job_id}

    def describe_snapshots(self, params: Mapping[str, str]) -> dict[str, Any]:
        statuses = p.statuses(params, SNAPSHOT_STATUSES)
        found = self.fleet.snapshots.describe(
            snapshot_ids=p.indexed(params, "snapshots"),
            statuses=statuses,
            search_word=params.get("search_word", ""),
            resource_id=params.get("resource_id", ""),
        )
        names = {v.volume_id: v.name for v in self.fleet.volumes.all()}
        return {
            "snapshot_set": [s.describe(names.get(s.volume_id, "")) for s in p.page(params, found)],
            "total_count": len(found),
        }

    def delete_snapshots(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = p.indexed(params, "snapshots")
        if not ids:
            raise invalid("parameter [snapshots] should not be empty")
        return {"job_id": self.fleet.delete_snapshots(ids).job_id}

    def create_volume_from_snapshot(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``snapshot``, ``volume_name`` → ``volume_id``, ``job_id``."""
        volume_id, job = self.fleet.create_volume_from_snapshot(
            p.required(params, "snapshot"), params.get("volume_name", "")
        )
        return {"volume_id": volume_id, "job_id": job.job_id}

    # -- key pairs -----------------------------------------------------------------------------------

    def create_keypair(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``mode=system`` generates the key (its private half answered once); ``user`` imports one."""
        pair, private = self.fleet.keypairs.create(
            name=params.get("keypair_name", ""),
            mode=params.get("mode", "system"),
            encrypt_method=params.get("encrypt_method", "ssh-rsa"),
            public_key=params.get("public_key", ""),
            description=params.get("description", ""),
        )
        reply: dict[str, Any] = {"keypair_id": pair.keypair_id}
        if private:
            reply["private_key"] = private
        return reply

    def create_tag(self, params: Mapping[str, str]) -> dict[str, Any]:
        tag = self.fleet.tags.create(p.required(params, "tag_name"), params.get("color", ""))
        return {"tag_id": tag.tag_id}

    def describe_tags(self, params: Mapping[str, str]) -> dict[str, Any]:
        tags = self.fleet.tags.describe(p.indexed(params, "tags"), params.get("search_word", ""))
        return {"tag_set": [t.describe() for t in p.page(params, tags)], "total_count": len(tags)}

    def _tag_pairs(self, params: Mapping[str, str]) -> list[tuple[str, str]]:
        pairs = []
        for n in range(1, 1 + 1000):
            tag_id = params.get(f"resource_tag_pairs.{n}.tag_id")
            if tag_id is None:
                break
            resource = p.required(params, f"resource_tag_pairs.{n}.resource_id")
            kind = p.required(params, f"resource_tag_pairs.{n}.resource_type")
            if kind != "instance":
                raise invalid(
                    f"parameter [resource_tag_pairs.{n}.resource_type] [{kind}] is not supported here"
                )
            pairs.append((tag_id, resource))
        if not pairs:
            raise invalid("parameter [resource_tag_pairs] should not be empty")
        return pairs

    def attach_tags(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.fleet.tags.attach(self._tag_pairs(params))
        return {}

    def detach_tags(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.fleet.tags.detach(self._tag_pairs(params))
        return {}

    def delete_tags(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = p.indexed(params, "tags")
        if not ids:
            raise invalid("parameter [tags] should not be empty")
        return {"tags": self.fleet.tags.delete(ids)}

    def describe_keypairs(self, params: Mapping[str, str]) -> dict[str, Any]:
        method = params.get("encrypt_method", "")
        pairs = self.fleet.keypairs.describe(
            keypair_ids=p.indexed(params, "keypairs"),
            search_word=params.get("search_word", ""),
            encrypt_method=method,
            instance_id=params.get("instance_id", ""),
        )
        return {
            "keypair_set": [pair.describe() for pair in p.page(params, pairs)],
            "total_count": len(pairs),
        }

    def _keypairs_and_instances(self, params: Mapping[str, str]) -> tuple[list[str], list[str]]:
        keypairs = p.indexed(params, "keypairs")
        if not keypairs:
            raise invalid("parameter [keypairs] should not be empty")
        return keypairs, self._instances(params)

    def attach_keypairs(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.attach_keypairs(*self._keypairs_and_instances(params)).job_id}

    def detach_keypairs(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"job_id": self.fleet.detach_keypairs(*self._keypairs_and_instances(params)).job_id}

    def delete_keypairs(self, params: Mapping[str, str]) -> dict[str, Any]:
        keypairs = p.indexed(params, "keypairs")
        if not keypairs:
            raise invalid("parameter [keypairs] should not be empty")
        return {"keypairs": self.fleet.keypairs.delete(keypairs)}

    def describe_jobs(self, params: Mapping[str, str]) -> dict[str, Any]:
        wanted = p.indexed(params, "jobs")
        jobs = (
            [j for j in (self.fleet.jobs.get(jid) for jid in wanted) if j]
            if wanted
            else self.fleet.jobs.all()
        )
        jobs = sorted(jobs, key=lambda j: j.create_time, reverse=True)
        return {"job_set": [j.describe() for j in p.page(params, jobs)], "total_count": len(jobs)}

    # -- resize --------------------------------------------------------------------------------------

    def resize_instances(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``instances.N`` with ``instance_type`` (``c<cpu>m<GiB>``) or ``cpu`` and ``memory``
        (MiB); stopped instances only (2500 otherwise), as QingCloud resizes."""
        instances = self._instances(params)
        kind = params.get("instance_type", "")
        if kind:
            cpu, memory = instance_type_size(kind)
        else:
            if "cpu" not in params and "memory" not in params:
                raise invalid("parameter [instance_type] or [cpu] and [memory] should be given")
            cpu = p.integer(params, "cpu", 0, low=1, high=64)
            memory = p.integer(params, "memory", 0, low=128, high=1024 * 1024)
        return {"job_id": self.fleet.resize_instances(instances, cpu or None, memory or None).job_id}

    def resize_volumes(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``volumes.N`` and ``size`` (GB): grows only (1100 for a smaller or equal size); a volume
        attached to an instance that is not stopped is refused (2500)."""
        volumes = self._volumes(params)
        p.required(params, "size")
        size = p.integer(params, "size", 0, low=1, high=65536)
        return {"job_id": self.fleet.resize_volumes(volumes, size).job_id}

    # -- VIPs (reserved addresses of a vxnet; simulator/vips.py) ----------------------------------

    def allocate_vips(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``vxnet_id`` (required), ``vip_name``, ``count`` or ``vip_addrs.N`` → ``vips``, ``job_id``."""
        vxnet = p.required(params, "vxnet_id")
        addresses = p.indexed(params, "vip_addrs")
        count = p.integer(params, "count", 1, low=1, high=255)
        ids = self.vips.allocate(vxnet, params.get("vip_name", ""), count, addresses)
        job = self.fleet.jobs.new("AllocateVips", ids)
        job.advance("successful")  # nothing to wait for: the addresses are kept at once
        return {"vips": ids, "job_id": job.job_id}

    def describe_vips(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``vxnets.N`` (required), ``vips.N``, ``vip_addrs.N``, ``vip_name`` (a substring)."""
        vxnets = p.indexed(params, "vxnets")
        if not vxnets:
            raise invalid("parameter [vxnets] should not be empty")
        found = self.vips.describe(
            vxnets=vxnets,
            vip_ids=p.indexed(params, "vips"),
            name=params.get("vip_name", ""),
            addresses=p.indexed(params, "vip_addrs"),
        )
        return {"vip_set": [v.describe() for v in p.page(params, found)], "total_count": len(found)}

    def release_vips(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = p.indexed(params, "vips")
        if not ids:
            raise invalid("parameter [vips] should not be empty")
        self.vips.release(ids)
        job = self.fleet.jobs.new("ReleaseVips", ids)
        job.advance("successful")
        return {"job_id": job.job_id}


def instance_type_size(kind: str) -> tuple[int, int]:
    """``c2m4`` → 2 CPUs and 4096 MiB (QingCloud's type names; 1100 for a name it does not have)."""
    match = re.fullmatch(r"c(\d{1,2})m(\d{1,4})", kind)
    if match is None or not 1 <= int(match[1]) <= 64 or int(match[2]) < 1:
        raise invalid(f"parameter [instance_type] [{kind}] is not an instance type of this zone")
    return int(match[1]), int(match[2]) * 1024
