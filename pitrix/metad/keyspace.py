"""The metadata keyspace: every key of a metadata cluster's etcd, spelled and parsed here only.

metad serves these keys and pitrixd writes them through metad's management API; both import
this module, so the layout of DESIGN.md ("Metadata layout") is written down once::

    /clusters/<cid>/cluster/...                 the cluster (owner, ids, generation ...)
    /clusters/<cid>/hosts/<role>/<iid>/...      a node
    /clusters/<cid>/hosts/<iid>/...             a node of a role-less app (mapping layout "roleless")
    /clusters/<cid>/env/<role>/<key>            a role's parameters
    /clusters/<cid>/staged-env/<iid>/<key>      one instance's parameters during an env rollout
    /clusters/<cid>/health/<role>/...           a role's health check
    /clusters/<cid>/monitor/<role>/...          a role's monitor command and items
    /clusters/<cid>/cmd/<iid>/{id,cmd,timeout}  the command an instance must run now
    /clusters/<cid>/{endpoints,links,adding-hosts,deleting-hosts}/...
    /clusters/<cid>/published/<key>             what services with ``publish`` printed (JSON)
    /clusters/<cid>/{upgrade-audit,rebuild-audit,vertical-scaling-roles}   while that operation runs
    /clusters/<cid>/linked-env/<key>            the cluster-level env a linking cluster reads
    /_pitrix/mapping/<iid>/...                  who an instance is (what /self means for it)
    /_pitrix/status/<cid>/<iid>/{heartbeat,applied,health,monitor,cmd/<cmd_id>}   its agent's reports
    /_pitrix/{revoked/<serial>,revoked-instances/<iid>}   refused certificates, instances
    /_pitrix/{bootstrap-used/<sha256>,issued/<iid>,revoke-after/<serial>}   certificate issuance

and the instance API's own paths (``/self/status/<report>``, ``/self/cert``, ``/self/bootstrap``)
that agents write to. Builders place the ids they are given as they are: ids are path segments
(metad's management API refuses others), and builders are on every request's path, so they do not
check. Parsers take any key and answer None for one that is not theirs or is malformed.

Only the standard library is imported: the agent uses this module too.
"""

from __future__ import annotations

from dataclasses import dataclass

CLUSTERS = "/clusters"
INTERNAL = "/_pitrix"
MAPPINGS = f"{INTERNAL}/mapping"
STATUS = f"{INTERNAL}/status"
REVOKED = f"{INTERNAL}/revoked"
REVOKED_INSTANCES = f"{INTERNAL}/revoked-instances"
BOOTSTRAP_USED = f"{INTERNAL}/bootstrap-used"
ISSUED = f"{INTERNAL}/issued"
REVOKE_AFTER = f"{INTERNAL}/revoke-after"

# A cluster's sections: ``/clusters/<cid>/<section>``, and the sections of an instance's ``/self``.
CLUSTER = "cluster"
HOSTS = "hosts"
ENV = "env"  # one subtree per role
# One subtree per instance: while present, that instance's ``/self/env`` (an env rollout's batch).
STAGED_ENV = "staged-env"
HEALTH = "health"  # one subtree per role; also the name of an agent's health report
CMD = "cmd"  # one subtree per instance; also where an agent's command results go
ENDPOINTS = "endpoints"
LINKS = "links"
ADDING_HOSTS = "adding-hosts"
DELETING_HOSTS = "deleting-hosts"
PUBLISHED = "published"  # what a service with ``publish: true`` printed, for every node to read
MONITOR = "monitor"  # one subtree per role; also the name of an agent's monitor report
OWNER = "owner"  # the field of the ``cluster`` section that says whose the cluster is
GENERATION = "generation"  # the field of the ``cluster`` section pitrixd bumps to reach every view
# Present only while an operation runs (AppCenter's operation keys): an upgrade's from/to versions,
# a recover's marker, a resize's comma-separated roles.
UPGRADE_AUDIT = "upgrade-audit"
REBUILD_AUDIT = "rebuild-audit"
VERTICAL_SCALING_ROLES = "vertical-scaling-roles"
# The cluster-level parameters as one flat map: what a linking cluster sees as ``links/<name>/env``.
LINKED_ENV = "linked-env"
# A mapping's ``layout``: "" (hosts under their role) or ROLELESS (``hosts/<iid>``, no role level).
ROLELESS = "roleless"
LAYOUTS = ("", ROLELESS)

# What an agent reports about itself: ``/_pitrix/status/<cid>/<iid>/<report>`` (``cmd/<cmd_id>``).
HEARTBEAT = "heartbeat"
APPLIED = "applied"

# The instance API: an instance's projection, and what it may write or ask there.
SELF = "/self"
SELF_STATUS = f"{SELF}/status"
SELF_CERT = f"{SELF}/cert"
SELF_BOOTSTRAP = f"{SELF}/bootstrap"

_INTERNAL_SEGMENT = INTERNAL[1:]
_MAPPING_SEGMENT = MAPPINGS.rsplit("/", 1)[1]
_REVOKED_SEGMENT = REVOKED.rsplit("/", 1)[1]
_REVOKED_INSTANCES_SEGMENT = REVOKED_INSTANCES.rsplit("/", 1)[1]
_CLUSTERS_SEGMENT = CLUSTERS[1:]
_STATUS_PREFIX = f"{STATUS}/"


# -- /clusters/<cid> ------------------------------------------------------------------------------


def cluster(cid: str) -> str:
    """``/clusters/<cid>``: everything of one cluster (pitrixd writes its document here)."""
    return f"{CLUSTERS}/{cid}"


def section(cid: str, name: str) -> str:
    """``/clusters/<cid>/<name>``: one section of a cluster, whole."""
    return f"{CLUSTERS}/{cid}/{name}"


def cluster_info(cid: str) -> str:
    """``/clusters/<cid>/cluster``: the cluster's own fields."""
    return section(cid, CLUSTER)


def owner(cid: str) -> str:
    """``/clusters/<cid>/cluster/owner``: whose the cluster is (certificates must name them)."""
    return f"{CLUSTERS}/{cid}/{CLUSTER}/{OWNER}"


def hosts(cid: str) -> str:
    return section(cid, HOSTS)


def host(cid: str, role: str, iid: str) -> str:
    """``/clusters/<cid>/hosts/<role>/<iid>``: one node as its peers see it; with ``role`` ""
    (a role-less app) ``/clusters/<cid>/hosts/<iid>``."""
    if not role:
        return f"{CLUSTERS}/{cid}/{HOSTS}/{iid}"
    return f"{CLUSTERS}/{cid}/{HOSTS}/{role}/{iid}"


def env(cid: str, role: str) -> str:
    """``/clusters/<cid>/env/<role>``: a role's parameters."""
    return f"{CLUSTERS}/{cid}/{ENV}/{role}"


def staged_env(cid: str, iid: str) -> str:
    """``/clusters/<cid>/staged-env/<iid>``: the parameters an env rollout gave one instance ahead
    of its role; metad shows them as that instance's ``/self/env`` (whole, not merged) while they
    are present, and to no other instance."""
    return f"{CLUSTERS}/{cid}/{STAGED_ENV}/{iid}"


def env_value(cid: str, role: str, key: str) -> str:
    """``/clusters/<cid>/env/<role>/<key>``: one parameter of a role."""
    return f"{CLUSTERS}/{cid}/{ENV}/{role}/{key}"


def health(cid: str, role: str) -> str:
    """``/clusters/<cid>/health/<role>``: a role's health check (cmd, interval, timeout)."""
    return f"{CLUSTERS}/{cid}/{HEALTH}/{role}"


def monitor(cid: str, role: str) -> str:
    """``/clusters/<cid>/monitor/<role>``: a role's monitor (cmd, interval, timeout, items)."""
    return f"{CLUSTERS}/{cid}/{MONITOR}/{role}"


def cmd(cid: str, iid: str) -> str:
    """``/clusters/<cid>/cmd/<iid>``: the command (id, cmd, timeout) an instance must run now."""
    return f"{CLUSTERS}/{cid}/{CMD}/{iid}"


def cmd_id(cid: str, iid: str) -> str:
    """``/clusters/<cid>/cmd/<iid>/id``: the id of the command published to an instance."""
    return f"{cmd(cid, iid)}/id"


def endpoints(cid: str) -> str:
    return section(cid, ENDPOINTS)


def links(cid: str) -> str:
    """``/clusters/<cid>/links``: link name → the id of another cluster of the same owner."""
    return section(cid, LINKS)


def adding_hosts(cid: str) -> str:
    return section(cid, ADDING_HOSTS)


def deleting_hosts(cid: str) -> str:
    return section(cid, DELETING_HOSTS)


def published(cid: str) -> str:
    """``/clusters/<cid>/published``: the JSON objects services with ``publish`` printed, merged."""
    return section(cid, PUBLISHED)


# -- /_pitrix/mapping -----------------------------------------------------------------------------


def mapping(iid: str) -> str:
    """``/_pitrix/mapping/<iid>``: who instance ``iid`` is (cluster, role, address, token hash)."""
    return f"{MAPPINGS}/{iid}"


def mapping_field(iid: str, field: str) -> str:
    return f"{MAPPINGS}/{iid}/{field}"


def mapped_instance(parts: list[str]) -> str | None:
    """The instance whose mapping the key with path segments ``parts`` is in, None if none is.

    Takes segments (``tree.split_path``), not the key: metad's mirror calls it for every key it
    applies and has split each once already.
    """
    if len(parts) > 2 and parts[0] == _INTERNAL_SEGMENT and parts[1] == _MAPPING_SEGMENT:
        return parts[2]
    return None


def decides_identity(parts: list[str]) -> bool:
    """Whether a write to the key with path ``parts`` can change who a caller is or may be.

    That is a mapping, a revocation, or a cluster's owner (or anything under those keys); metad
    re-identifies a connection's caller only after such a write, not after every write.
    """
    if len(parts) >= 2 and parts[0] == _INTERNAL_SEGMENT:
        return parts[1] in (_MAPPING_SEGMENT, _REVOKED_SEGMENT, _REVOKED_INSTANCES_SEGMENT)
    return len(parts) >= 4 and parts[0] == _CLUSTERS_SEGMENT and parts[2] == CLUSTER and parts[3] == OWNER


def decides_links(parts: list[str]) -> bool:
    """Whether a write to the key with path ``parts`` is to a cluster's links: which other clusters'
    sections its instances' views depend on (with the owners, which :func:`decides_identity` has)."""
    return len(parts) >= 3 and parts[0] == _CLUSTERS_SEGMENT and parts[2] == LINKS


# -- /_pitrix/status ------------------------------------------------------------------------------


def cluster_status(cid: str) -> str:
    """``/_pitrix/status/<cid>``: every report of a cluster's agents."""
    return f"{STATUS}/{cid}"


def cluster_status_prefix(cid: str) -> str:
    """``/_pitrix/status/<cid>/``: the prefix to watch for a cluster's reports."""
    return f"{STATUS}/{cid}/"


def instance_status(cid: str, iid: str, *report: str) -> str:
    """``/_pitrix/status/<cid>/<iid>[/<report>...]``: an instance's reports, or one of them."""
    return "/".join([STATUS, cid, iid, *report])


def command_result(cid: str, iid: str, command: str) -> str:
    """``/_pitrix/status/<cid>/<iid>/cmd/<command>``: the result of one command on one instance."""
    return f"{STATUS}/{cid}/{iid}/{CMD}/{command}"


def command_report(command: str) -> str:
    """``cmd/<command>``: where a command's result is among an instance's reports."""
    return f"{CMD}/{command}"


@dataclass(frozen=True, slots=True)
class StatusKey:
    """A parsed ``/_pitrix/status`` key: whose report, and which (``""``: the instance's own key)."""

    cluster_id: str
    instance_id: str
    report: str

    @property
    def command(self) -> str | None:
        """The command id, for a command's result."""
        kind, _, rest = self.report.partition("/")
        return rest if kind == CMD and rest else None


def parse_status(key: str) -> StatusKey | None:
    """The cluster, instance and report of a status key; None for any other or a malformed key."""
    if not key.startswith(_STATUS_PREFIX):
        return None
    cid, _, rest = key[len(_STATUS_PREFIX) :].partition("/")
    iid, _, report = rest.partition("/")
    if not cid or not iid or (report and "" in report.split("/")):
        return None
    return StatusKey(cid, iid, report)


# -- certificates ---------------------------------------------------------------------------------


def revoked(serial: str) -> str:
    """``/_pitrix/revoked/<serial>``: a certificate refused from now on (serial in hex)."""
    return f"{REVOKED}/{serial}"


def revoked_instance(iid: str) -> str:
    """``/_pitrix/revoked-instances/<iid>``: every certificate naming the instance is refused."""
    return f"{REVOKED_INSTANCES}/{iid}"


def bootstrap_used(token_sha256: str) -> str:
    """``/_pitrix/bootstrap-used/<sha256>``: a bootstrap token spent, and what it bought."""
    return f"{BOOTSTRAP_USED}/{token_sha256}"


def issued(iid: str) -> str:
    """``/_pitrix/issued/<iid>``: the last certificate issued to an instance."""
    return f"{ISSUED}/{iid}"


def revoke_after(serial: str) -> str:
    """``/_pitrix/revoke-after/<serial>``: a renewed certificate, revoked once its grace ends."""
    return f"{REVOKE_AFTER}/{serial}"


# -- the instance API -----------------------------------------------------------------------------


def self_status(report: str, *parts: str) -> str:
    """``/self/status/<report>[/...]``: where an agent writes a report about itself."""
    return "/".join([SELF_STATUS, report, *parts])
