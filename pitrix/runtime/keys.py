"""Where pitrixd keeps its records in its own etcd: every key built and parsed here only.

    /clusters/<cid>                              Cluster (alone there: listing them reads nothing else)
    /cluster-data/<cid>/nodes/<node_id>          Node
    /cluster-data/<cid>/jobs/<job_id>            Job
    /cluster-data/<cid>/steps/<job_id>/<step>    StepRecord (the job's journal)
    /cluster-data/<cid>/tokens/<node_id>         a node's bootstrap token (apart: the API shows nodes)
    /cluster-data/<cid>/role-keys/<role>         a passphraseless role's SSH private key (sealed)
    /cluster-data/<cid>/reserved-ips/<name>      a reserved address (VIP) the cloud keeps for it
    /owners/<cid>                                the replica driving the cluster (on its lease)
    /runtimes/<name>                             Runtime (credentials sealed)
    /metadata-clusters/<owner>/<runtime>         MetadataCluster
    /keypairs/<owner>/<runtime>                  an owner's SSH key pair on a runtime (sealed)
    /pitrix/ca, /pitrix/management-ca            the runtime's certificate authorities (sealed)
    /secrets/sealed-v1                           set once every record is sealed
    /event-log/<cid>/<revision>.<index>          a kept event (built in pitrix/api/event_log.py, with
    /pitrix/event-log-cursor                     the last revision recorded; outside "/cluster")
    /secrets/canary                              proves the sealing key (``pitrix.sealing``'s: it sits
                                                 below the runtime and spells its one key itself)

Not to be confused with the metadata keyspace (:mod:`pitrix.metad.keyspace`), which lives in a
metadata cluster's etcd and starts with ``/clusters/`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CLUSTERS = "/clusters/"
CLUSTER_DATA = "/cluster-data/"
# Both "/clusters/" and "/cluster-data/" start with it: one watch sees every cluster's records in
# one revision order.
CLUSTER_RECORDS = "/cluster"
OWNERS = "/owners/"
RUNTIMES = "/runtimes/"
METADATA_CLUSTERS = "/metadata-clusters/"
METADATA_DATA = "/metadata-data/"
KEYPAIRS = "/keypairs/"
CA = "/pitrix/ca"
MANAGEMENT_CA = "/pitrix/management-ca"
ETCD_PEERS_CA = "/pitrix/etcd-peers-ca"
SEALED_MARKER = "/secrets/sealed-v1"

NODES, JOBS, STEPS, TOKENS = "nodes", "jobs", "steps", "tokens"

Kind = Literal["cluster", "node", "job", "step", "token", "owner", "runtime", "metadata", "keypair"]


def cluster_key(cid: str) -> str:
    return f"{CLUSTERS}{cid}"


def cluster_data_prefix(cid: str) -> str:
    """Everything of a cluster but its own record."""
    return f"{CLUSTER_DATA}{cid}/"


def nodes_prefix(cid: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{NODES}/"


def jobs_prefix(cid: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{JOBS}/"


def tokens_prefix(cid: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{TOKENS}/"


def steps_prefix(cid: str, job_id: str) -> str:
    """One job's journal: a step's record is this prefix and the step's name."""
    return f"{CLUSTER_DATA}{cid}/{STEPS}/{job_id}/"


def node_key(cid: str, node_id: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{NODES}/{node_id}"


def job_key(cid: str, job_id: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{JOBS}/{job_id}"


def step_key(cid: str, job_id: str, step: str) -> str:
    return f"{CLUSTER_DATA}{cid}/{STEPS}/{job_id}/{step}"


def token_key(cid: str, node_id: str) -> str:
    """A node's bootstrap token: kept apart from the node record, which the admin API shows."""
    return f"{CLUSTER_DATA}{cid}/{TOKENS}/{node_id}"


def owner_key(cid: str) -> str:
    return f"{OWNERS}{cid}"


def runtime_key(name: str) -> str:
    return f"{RUNTIMES}{name}"


def metadata_key(owner: str, runtime: str) -> str:
    return f"{METADATA_CLUSTERS}{owner}/{runtime}"


def metadata_steps_prefix(owner: str, runtime: str, job_id: str = "") -> str:
    """Where the steps of a metadata cluster's making are journaled (every job's, or one job's)."""
    base = f"{METADATA_DATA}{owner}/{runtime}/steps/"
    return f"{base}{job_id}/" if job_id else base


def keypair_key(owner: str, runtime: str) -> str:
    return f"{KEYPAIRS}{owner}/{runtime}"


def role_key_key(cid: str, role: str) -> str:
    """A ``passphraseless`` role's key pair, shared by its nodes (pitrix.runtime.passphraseless)."""
    return f"{CLUSTER_DATA}{cid}/role-keys/{role}"


@dataclass(frozen=True, slots=True)
class Key:
    """A parsed record key: what kind of record, and the ids its key holds (the others empty)."""

    kind: Kind
    cluster_id: str = ""
    node_id: str = ""
    job_id: str = ""
    step: str = ""
    name: str = ""  # a runtime's
    owner: str = ""  # a metadata cluster's or a key pair's
    runtime: str = ""  # a metadata cluster's or a key pair's


def parse(key: str) -> Key | None:
    """What record ``key`` is; None for a key of no record or a malformed one (an empty segment)."""
    if not key.startswith("/"):
        return None
    parts = key[1:].split("/")
    if "" in parts:
        return None
    root, rest = parts[0], parts[1:]
    if root == CLUSTERS.strip("/") and len(rest) == 1:
        return Key("cluster", cluster_id=rest[0])
    if root == CLUSTER_DATA.strip("/") and len(rest) >= 3:
        cid, section = rest[0], rest[1]
        if section in (NODES, TOKENS) and len(rest) == 3:
            return Key("node" if section == NODES else "token", cluster_id=cid, node_id=rest[2])
        if section == JOBS and len(rest) == 3:
            return Key("job", cluster_id=cid, job_id=rest[2])
        if section == STEPS and len(rest) == 4:
            return Key("step", cluster_id=cid, job_id=rest[2], step=rest[3])
        return None
    if root == OWNERS.strip("/") and len(rest) == 1:
        return Key("owner", cluster_id=rest[0])
    if root == RUNTIMES.strip("/") and len(rest) == 1:
        return Key("runtime", name=rest[0])
    if root in (METADATA_CLUSTERS.strip("/"), KEYPAIRS.strip("/")) and len(rest) == 2:
        return Key(
            "metadata" if root == METADATA_CLUSTERS.strip("/") else "keypair", owner=rest[0], runtime=rest[1]
        )
    return None


def reserved_ips_prefix(cid: str) -> str:
    """A cluster's reserved addresses (``AppSpec.reserved_ips``), one record per name."""
    return f"{CLUSTER_DATA}{cid}/reserved-ips/"


def reserved_ip_key(cid: str, name: str) -> str:
    return f"{reserved_ips_prefix(cid)}{name}"


# Live pitrixd replicas: ``/replicas/<id>`` on the replica's own lease (pitrix.runtime.fleet), so
# it disappears with the replica's owner keys when the replica dies.
REPLICAS = "/replicas/"


def replica_key(replica: str) -> str:
    return f"{REPLICAS}{replica}"
