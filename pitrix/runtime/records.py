"""What the runtime keeps in etcd (where: :mod:`pitrix.runtime.keys`).

Everything a restarted pitrixd needs to resume is stored before it is acted on: the cluster
(spec, state, current job), its nodes (deterministic names, the cloud's ids once known), and
each job with a journal of its steps.

Secrets inside records are sealed text (:mod:`pitrix.sealing`): a runtime's credentials, each
field on its own, and password parameters in a cluster's ``env`` and an env job's ``args`` (see
:mod:`pitrix.runtime.secret_env`). A record shown through the API never carries them.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
)

from pitrix.runtime.keys import metadata_key, runtime_key
from pitrix.runtime.spec import AppSpec
from pitrix.sealing import Sealer, is_sealed, redact

DEFAULT_HEARTBEAT_INTERVAL = 2.0
# The image metadata VMs boot unless the runtime names another (``Runtime.metadata_image``).
DEFAULT_METADATA_IMAGE = "pitrix-metadata"

State = Literal[
    "pending",
    "creating",
    "active",
    "stopping",
    "stopped",
    "starting",
    "scaling_out",
    "scaling_in",
    "updating",
    "recovering",
    "running_service",
    "restarting",
    "upgrading",
    "backing_up",
    "relinking",
    "resizing",
    "deleting",
    "deleted",
    "failed",
]
Channel = Literal["rest", "ssh"]
CHANNELS: tuple[Channel, ...] = ("rest", "ssh")


def new_id(prefix: str) -> str:
    """A short random id in QingCloud's style (``cl-3f9a1c0b``)."""
    return f"{prefix}-{secrets.token_hex(4)}"


# The serialization context of a record on its way to etcd; any other dump is a view.
STORED: dict[str, Any] = {"stored": True}
# Words that make a runtime field a credential: sealed in etcd, left out of every view.
SECRET_WORDS = ("secret", "password", "token", "key", "credential")


def secret_field(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)


def _stored(info: FieldSerializationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("stored"))


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def dump(self) -> bytes:
        return self.model_dump_json(context=STORED).encode()


class Job(_Record):
    id: str
    cluster_id: str
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: Literal["running", "successful", "failed"] = "running"
    error: str | None = None
    created: float = Field(default_factory=time.time)
    finished: float | None = None
    # What a job found out on each node, by node id (a custom service: status, exit code, output).
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_serializer("args", mode="wrap")
    def _args_out(
        self, value: dict[str, Any], handler: SerializerFunctionWrapHandler, info: FieldSerializationInfo
    ) -> Any:
        """Sealed values (an env job's passwords) are stored as they are and shown as ``******``."""
        out = handler(value)
        return out if _stored(info) else redact(out)


class StepRecord(_Record):
    name: str
    status: Literal["running", "done", "failed"]
    started: float
    finished: float | None = None
    error: str | None = None
    detail: str = ""
    attempt: int = 1  # > 1 once a retryable cloud error made the step run again
    attempts: int = 1  # how many attempts the retry policy allows (set on the first retry)
    last_error: str | None = None  # why the previous attempt failed


class RoleResources(BaseModel):
    """A role's size after a resize; a field left None keeps the spec's value."""

    model_config = ConfigDict(extra="ignore")

    cpu: int | None = None
    memory: int | None = None  # MiB
    instance_type: str | None = None
    volume_size: int | None = None  # GiB


class Cluster(_Record):
    id: str
    name: str
    owner: str
    runtime: str
    app: AppSpec
    counts: dict[str, int]
    env: dict[str, dict[str, str]] = Field(default_factory=dict)
    # link name -> id of a cluster of the same owner and runtime, seen by this one's nodes under /self/links
    links: dict[str, str] = Field(default_factory=dict)
    # How pitrixd reaches the nodes besides metad: "rest" (userdata boots the agent) or "ssh"
    # (its key pair; the agent is pushed and started over SSH, which also carries a fallback).
    channel: Channel = "rest"
    state: State = "pending"
    job_id: str | None = None
    last_error: str | None = None
    recovery_halted: str | None = None  # why auto-recovery stopped (meltdown guard); cleared by recover
    # backup: the backup a create restores (its volumes made from the snapshots); "" for a new cluster
    restored_from: str = ""
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    # resize: role -> what its nodes were resized to, over the spec's cpu/memory/instance_type and
    # volume size; new nodes (scale-out, recover) are made that size too.
    resources: dict[str, RoleResources] = Field(default_factory=dict)


class Node(_Record):
    node_id: str
    role: str
    index: int
    name: str  # deterministic cloud instance name: <cluster_id>-<node_id>
    instance_id: str = ""
    ip: str = ""
    volume_id: str = ""  # the node's volume (roles with ``volume``), attached to its instance
    status: Literal["planned", "created", "running", "registered", "ready", "leaving", "terminated"] = (
        "planned"
    )


class Runtime(_Record):
    """A cloud account in a place: which provider, where, with which credentials."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    provider: str = Field(min_length=1)
    zone: str = ""
    endpoint: str = ""
    # Where metadata clusters live: one per owner (tenants never share one), or one for every owner
    # of a runtime trusted enough to share (each instance still sees only its own cluster, by its
    # certificate).
    placement: Literal["per-owner", "per-runtime"] = "per-owner"
    # Whether a metadata cluster goes when its last cluster does, or stays for the next one.
    metadata_retention: Literal["remove-when-unused", "keep"] = "remove-when-unused"
    # Seconds between an agent's heartbeats, for the nodes deployed from now on (an agent reads it
    # from its config at start). Its lease lasts three intervals: a longer one costs the metadata
    # cluster less at thousands of agents, and a dead node is noticed that much later.
    heartbeat_interval: float = Field(DEFAULT_HEARTBEAT_INTERVAL, ge=0.5, le=300)
    # Members of each metadata cluster made on this runtime: three survive the loss of one VM; one
    # costs a third as much and stops every config change and command while its VM is down. Odd,
    # as etcd's quorum wants.
    metadata_size: int = Field(3, ge=1, le=7)
    # The network every instance joins: a QingCloud vxnet id (its API places an instance in one),
    # an AWS subnet id, an OpenStack network id. Empty: the provider's default network.
    network: str = ""
    # The image each metadata VM boots: one holding etcd and pitrix-metad (docs/providers.md says
    # what goes in it), named as the cloud names images: an AMI id, a QingCloud image id ...
    metadata_image: str = Field(DEFAULT_METADATA_IMAGE, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")

    @field_validator("metadata_size")
    @classmethod
    def _odd_size(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd (1, 3, 5 or 7): an even etcd cluster tolerates no more losses")
        return value

    def public(self) -> dict[str, Any]:
        """The definition without anything secret, for answers and logs."""
        return {k: v for k, v in self.model_dump().items() if not secret_field(k)}

    def dump(self) -> bytes:
        raise TypeError("a runtime holds credentials: store it with sealed(sealer)")

    @staticmethod
    def _context(name: str, field: str) -> str:
        return f"{runtime_key(name)}/{field}"

    def sealed(self, sealer: Sealer) -> bytes:
        """The record for etcd: each credential field sealed on its own (bound to runtime and field)."""
        data = self.model_dump(mode="json")
        for field, value in data.items():
            if secret_field(field) and value not in (None, "") and not is_sealed(value):
                data[field] = sealer.seal(json.dumps(value), self._context(self.name, field))
        return json.dumps(data).encode()

    @classmethod
    def opened(cls, raw: bytes, sealer: Sealer) -> tuple[Runtime, bool]:
        """The runtime a stored record holds, credentials opened; True if any was stored in clear."""
        data = json.loads(raw)
        clear = False
        name = str(data.get("name", ""))
        for field, value in data.items():
            if not secret_field(field):
                continue
            if is_sealed(value):
                data[field] = json.loads(sealer.unseal(value, cls._context(name, field)))
            elif value not in (None, ""):
                clear = True  # written before sealing existed
        return cls.model_validate(data), clear


class MetadataMember(BaseModel):
    """A member of a metadata cluster of several, beyond the first (whose fields are the record's
    own): its VM, and its issuer bootstrap token's hash until spent (sealed with the record)."""

    name: str
    instance_id: str = ""
    ip: str = ""
    bootstrap_sha256: str = ""
    bootstrap_expires: float = 0.0
    bootstrap_consumed: float = 0.0


class MetadataCluster(_Record):
    owner: str
    runtime: str
    name: str
    instance_id: str = ""
    ip: str = ""
    status: Literal["creating", "ready", "deleting"] = "creating"
    # The job making (or last having made) it: its steps are journaled under metadata_steps_prefix.
    job_id: str = ""
    # The cluster's own issuer certificate (PEM), signed once its metad has made the key and
    # offered a CSR (issuer bootstrap). Records made before that kept certificate then key here;
    # empty on a record made before the runtime spoke TLS, which keeps talking plain HTTP.
    issuer_pem: str = ""
    # The issuer bootstrap's one-time token: its hash (the proofs' key, kept until consumed), until
    # when it is good, and when it was consumed (0: not yet). The token itself is only in userdata.
    bootstrap_sha256: str = ""
    bootstrap_expires: float = 0.0
    bootstrap_consumed: float = 0.0
    # When member 0's metad of a cluster of several took its issuer and peer certificates (0: not
    # yet). It then serves nothing until its etcd has a quorum, so a bootstrap resumed after it
    # (another member's VM had stopped, pitrixd was cut off) goes on with the other members.
    handed_over: float = 0.0
    # Members 1..N-1 of a metadata cluster of several (the runtime's metadata_size); member 0 is
    # the record's own VM (name, instance_id, ip), so a cluster of one has none here.
    members: list[MetadataMember] = Field(default_factory=list)
    # Member 0's VM name once a replacement made it anew (``<name>-m0-g<n>``); empty: ``name``.
    vm: str = ""
    # What the metadata monitor last found wrong with the members ("" while every member answers):
    # a replacement under way, or a lost quorum only the operator can restore.
    condition: str = ""

    @property
    def vm_name(self) -> str:
        """Member 0's VM name (the cluster's own name until that VM was replaced)."""
        return self.vm or self.name

    def dump(self) -> bytes:
        raise TypeError("a metadata cluster holds its issuer's key: store it with sealed(sealer)")

    def sealed(self, sealer: Sealer) -> bytes:
        """The record for etcd, the issuer (whose key signs for every owner it serves) sealed."""
        data = self.model_dump(mode="json")
        if self.issuer_pem:
            data["issuer_pem"] = sealer.seal_text(self.issuer_pem, self._context(self.owner, self.runtime))
        if self.bootstrap_sha256:  # until consumed, it is what proofs to the VM's metad are keyed with
            where = self._context(self.owner, self.runtime, "bootstrap_sha256")
            data["bootstrap_sha256"] = sealer.seal_text(self.bootstrap_sha256, where)
        for member in data["members"]:
            if member["bootstrap_sha256"]:
                where = self._context(self.owner, self.runtime, f"members/{member['name']}/bootstrap_sha256")
                member["bootstrap_sha256"] = sealer.seal_text(member["bootstrap_sha256"], where)
        return json.dumps(data).encode()

    @classmethod
    def opened(cls, raw: bytes, sealer: Sealer) -> MetadataCluster:
        """The record as stored, its issuer opened (one stored in clear is read as it is)."""
        data = json.loads(raw)
        owner, runtime = str(data.get("owner", "")), str(data.get("runtime", ""))
        for field in ("issuer_pem", "bootstrap_sha256"):
            if isinstance(data.get(field), str):
                data[field] = sealer.open_text(data[field], cls._context(owner, runtime, field))
        for member in data.get("members") or []:
            if isinstance(member, dict) and isinstance(member.get("bootstrap_sha256"), str):
                where = cls._context(owner, runtime, f"members/{member.get('name', '')}/bootstrap_sha256")
                member["bootstrap_sha256"] = sealer.open_text(member["bootstrap_sha256"], where)
        return cls.model_validate(data)

    @staticmethod
    def _context(owner: str, runtime: str, field: str = "issuer_pem") -> str:
        return f"{metadata_key(owner, runtime)}/{field}"

    @property
    def scheme(self) -> str:
        return "https" if self.issuer_pem or self.bootstrap_sha256 else "http"

    @property
    def issuer_cert_pem(self) -> bytes:
        """The issuer's certificate alone (an old record's key, if any, left out)."""
        text = self.issuer_pem
        end = "-----END CERTIFICATE-----"
        return (text[: text.index(end) + len(end)] + "\n").encode() if end in text else b""

    @property
    def holds_issuer_key(self) -> bool:
        """A record from before issuer bootstrap: pitrixd made (and kept) the issuer's key."""
        return "PRIVATE KEY" in self.issuer_pem

    @property
    def instance_url(self) -> str:
        return f"{self.scheme}://{self.ip}:8080"

    @property
    def instance_urls(self) -> list[str]:
        """Every member's instance API: what agents are given, to fail over between."""
        return [self.instance_url] + [f"{self.scheme}://{m.ip}:8080" for m in self.members if m.ip]

    @property
    def manage_url(self) -> str:
        return f"{self.scheme}://{self.ip}:9611"
