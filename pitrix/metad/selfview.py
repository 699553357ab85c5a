"""What ``/self`` means for one instance: the projection of DESIGN.md and the keys it depends on.

A view is a nested dict whose leaves are tree nodes, so building one costs a handful of lookups
and rendering reuses each node's cached JSON; the dependency list is what long-poll waiters are
indexed by, so a write wakes only the callers whose view it can change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitrix.metad.tree import Node, Tree, split_path

MAPPING_ROOT = "/_pitrix/mapping"
REVOKED_ROOT = "/_pitrix/revoked"
REVOKED_INSTANCES_ROOT = "/_pitrix/revoked-instances"
STATUS_ROOT = "/_pitrix/status"
CLUSTERS_ROOT = "/clusters"

# Sections of a cluster shared by all its instances, and what a linked cluster exposes.
CLUSTER_SECTIONS = ("hosts", "cluster", "endpoints", "adding-hosts", "deleting-hosts")
LINKED_SECTIONS = ("hosts", "cluster", "endpoints")
SELF_SECTIONS = (
    "host",
    "hosts",
    "cluster",
    "env",
    "health",
    "cmd",
    "adding-hosts",
    "deleting-hosts",
    "endpoints",
    "links",
)
# Sections that differ between instances of one role; every other section of ``/self`` is the
# same for all of a role's instances, so it is rendered once per change (render.SharedSections).
INSTANCE_SECTIONS = ("host", "cmd")


@dataclass(frozen=True, slots=True)
class Mapping:
    """Who an instance is: read from ``/_pitrix/mapping/<iid>/...``."""

    instance_id: str
    cluster_id: str
    role: str
    ip: str
    # hex sha256 of the instance's bootstrap token (POST /self/bootstrap), if the runtime set one
    bootstrap_sha256: str = ""
    # When that token stops buying a certificate (seconds since the epoch; 0: the runtime set none)
    bootstrap_expires: float = 0.0
    # Derived paths, computed once per mapping (a mapping changes rarely, is read on every request).
    key: str = field(init=False, repr=False, compare=False)
    cluster: str = field(init=False, repr=False, compare=False)
    sources: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cluster = f"{CLUSTERS_ROOT}/{self.cluster_id}"
        object.__setattr__(self, "key", f"{MAPPING_ROOT}/{self.instance_id}")
        object.__setattr__(self, "cluster", cluster)
        sources = {
            "host": f"{cluster}/hosts/{self.role}/{self.instance_id}",
            # Role-scoped: the role's parameters, and the role's health check (cmd, interval, timeout).
            "env": f"{cluster}/env/{self.role}",
            "health": f"{cluster}/health/{self.role}",
            "cmd": f"{cluster}/cmd/{self.instance_id}",
        }
        for section in SELF_SECTIONS:
            sources.setdefault(section, f"{cluster}/{section}")
        object.__setattr__(self, "sources", sources)

    @classmethod
    def from_node(cls, iid: str, node: Node | None) -> Mapping | None:
        """The mapping if it is complete enough to serve ``/self``, else None."""
        if node is None:
            return None
        fields = node.obj()
        if not isinstance(fields, dict):
            return None
        cid, role, ip = fields.get("cluster_id"), fields.get("role"), fields.get("ip")
        if not all(isinstance(v, str) and v and "/" not in v for v in (cid, role)) or not isinstance(ip, str):
            return None
        token = fields.get("bootstrap_sha256")
        try:
            expires = float(fields.get("bootstrap_expires") or 0)
        except (TypeError, ValueError):
            expires = -1.0  # unreadable: the token is treated as expired, never as unbounded
        return cls(
            instance_id=iid,
            cluster_id=str(cid),
            role=str(role),
            ip=ip,
            bootstrap_sha256=token.lower() if isinstance(token, str) else "",
            bootstrap_expires=expires,
        )

    def status_key(self, *parts: str) -> str:
        return "/".join([STATUS_ROOT, self.cluster_id, self.instance_id, *parts])


def decides_identity(parts: list[str]) -> bool:
    """Whether a write to the key with path ``parts`` can change who a caller is or may be.

    That is a mapping, a revocation, or a cluster's owner (or anything under those keys); metad
    re-identifies a connection's caller only after such a write, not after every write.
    """
    if len(parts) >= 2 and parts[0] == "_pitrix":
        return parts[1] in ("mapping", "revoked", "revoked-instances")
    return len(parts) >= 4 and parts[0] == "clusters" and parts[2] == "cluster" and parts[3] == "owner"


def _owner(tree: Tree, cid: str) -> str:
    return tree.text(f"{CLUSTERS_ROOT}/{cid}/cluster/owner") or ""


def _links(tree: Tree, mapping: Mapping) -> dict[str, str]:
    """Link name → linked cluster id, for links to clusters of the same owner only."""
    node = tree.live(f"{mapping.cluster}/links")
    if node is None:
        return {}
    own = _owner(tree, mapping.cluster_id)
    links: dict[str, str] = {}
    for name, child in node.live_children():
        target = child.value
        if target and "/" not in target and not child.live_children() and _owner(tree, target) == own:
            links[name] = target
    return links


def dependencies(tree: Tree, mapping: Mapping, subpath: list[str]) -> list[str]:
    """Key prefixes whose change may change the caller's view of ``/self/<subpath>``."""
    deps = [mapping.key]
    sections = SELF_SECTIONS if not subpath else (subpath[0],)
    for section in sections:
        if section == "links":
            deps.append(f"{mapping.cluster}/links")
            deps.append(f"{mapping.cluster}/cluster/owner")
            for name, target in _links(tree, mapping).items():
                if len(subpath) > 1 and subpath[1] != name:
                    continue
                deps.append(f"{CLUSTERS_ROOT}/{target}/cluster/owner")
                deps.extend(f"{CLUSTERS_ROOT}/{target}/{s}" for s in LINKED_SECTIONS)
        elif section in SELF_SECTIONS:
            source = mapping.sources[section]
            if subpath and section == subpath[0] and len(subpath) > 1:
                source = "/".join([source, *subpath[1:]])
            deps.append(source)
    return deps


def build(tree: Tree, mapping: Mapping, sections: tuple[str, ...] = SELF_SECTIONS) -> dict[str, Any]:
    """The ``/self`` view (or just ``sections`` of it); absent sections are left out."""
    view: dict[str, Any] = {}
    for section in sections:
        if section == "links":
            links: dict[str, Any] = {}
            for name, target in _links(tree, mapping).items():
                linked = {
                    s: node for s in LINKED_SECTIONS if (node := tree.live(f"{CLUSTERS_ROOT}/{target}/{s}"))
                }
                if linked:
                    links[name] = linked
            if links:
                view["links"] = links
        else:
            node = tree.live(mapping.sources[section])
            if node is not None:
                view[section] = node
    return view


def lookup(tree: Tree, mapping: Mapping, path: str) -> Any:
    """The caller's view at instance-API ``path`` (``/self/...`` or ``/``), None if absent.

    Plain paths see a root holding only ``self``: an instance never sees other clusters' data.
    """
    parts = split_path(path)
    if not parts:
        return {"self": build(tree, mapping)}
    if parts[0] != "self":
        return None
    rest = parts[1:]
    if not rest:
        return build(tree, mapping)
    if rest[0] not in SELF_SECTIONS:
        return None
    current: Any = build(tree, mapping, (rest[0],))
    for part in rest:
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, Node):
            current = current.child(part)
        else:
            return None
        if current is None:
            return None
    return current


def addressable(path: str) -> bool:
    """Whether ``path`` can ever name something in a caller's view (else 404 without waiting)."""
    parts = split_path(path)
    if not parts:
        return True
    return parts[0] == "self" and (len(parts) == 1 or parts[1] in SELF_SECTIONS)


def view_dependencies(tree: Tree, mapping: Mapping, path: str) -> list[str]:
    """Dependencies for instance-API ``path``; ``/`` and ``/self`` depend on the whole view."""
    parts = split_path(path)
    if parts and parts[0] == "self":
        return dependencies(tree, mapping, parts[1:])
    return dependencies(tree, mapping, [])
