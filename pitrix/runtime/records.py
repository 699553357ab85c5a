"""What the runtime keeps in etcd, and where.

Everything a restarted pitrixd needs to resume lives under these keys before it is acted on:
the cluster (spec, state, current job), its nodes (deterministic names, the cloud's ids once
known), and each job with a journal of its steps.

    /clusters/<cid>                         Cluster (JSON)
    /cluster-data/<cid>/nodes/<node_id>     Node (JSON)
    /cluster-data/<cid>/jobs/<job_id>       Job (JSON)
    /cluster-data/<cid>/steps/<job_id>/<step>   StepRecord (JSON)

Cluster documents sit alone under /clusters/ so listing them reads nothing else.
    /runtimes/<name>                     Runtime definition (JSON)
    /metadata-clusters/<owner>/<runtime> MetadataCluster (JSON)
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pitrix.runtime.spec import AppSpec

DEFAULT_HEARTBEAT_INTERVAL = 2.0

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
    "deleting",
    "deleted",
    "failed",
]
Channel = Literal["rest", "ssh"]
CHANNELS: tuple[Channel, ...] = ("rest", "ssh")


def new_id(prefix: str) -> str:
    """A short random id in QingCloud's style (``cl-3f9a1c0b``)."""
    return f"{prefix}-{secrets.token_hex(4)}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class Job(_Record):
    id: str
    cluster_id: str
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: Literal["running", "successful", "failed"] = "running"
    error: str | None = None
    created: float = Field(default_factory=time.time)
    finished: float | None = None


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
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)


class Node(_Record):
    node_id: str
    role: str
    index: int
    name: str  # deterministic cloud instance name: <cluster_id>-<node_id>
    instance_id: str = ""
    ip: str = ""
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

    def public(self) -> dict[str, Any]:
        """The definition without anything secret, for answers and logs."""
        data = self.model_dump()
        return {
            k: v for k, v in data.items() if not any(s in k for s in ("secret", "password", "token", "key"))
        }


class MetadataCluster(_Record):
    owner: str
    runtime: str
    name: str
    instance_id: str = ""
    ip: str = ""
    status: Literal["creating", "ready", "deleting"] = "creating"
    # The cluster's own issuer (certificate then key, PEM), made before its VM: metad trusts only it.
    # Empty on a record made before the runtime spoke TLS, which keeps talking plain HTTP.
    issuer_pem: str = ""

    @property
    def scheme(self) -> str:
        return "https" if self.issuer_pem else "http"

    @property
    def instance_url(self) -> str:
        return f"{self.scheme}://{self.ip}:8080"

    @property
    def manage_url(self) -> str:
        return f"{self.scheme}://{self.ip}:9611"


def cluster_key(cid: str) -> str:
    return f"/clusters/{cid}"


def node_key(cid: str, node_id: str) -> str:
    return f"/cluster-data/{cid}/nodes/{node_id}"


def job_key(cid: str, job_id: str) -> str:
    return f"/cluster-data/{cid}/jobs/{job_id}"


def step_key(cid: str, job_id: str, step: str) -> str:
    return f"/cluster-data/{cid}/steps/{job_id}/{step}"


def runtime_key(name: str) -> str:
    return f"/runtimes/{name}"


def metadata_key(owner: str, runtime: str) -> str:
    return f"/metadata-clusters/{owner}/{runtime}"


def token_key(cid: str, node_id: str) -> str:
    """A node's bootstrap token: kept apart from the node record, which the admin API shows."""
    return f"/cluster-data/{cid}/tokens/{node_id}"


def cluster_data_prefix(cid: str) -> str:
    return f"/cluster-data/{cid}/"
