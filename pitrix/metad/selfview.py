"""What ``/self`` means for one instance: the projection of DESIGN.md and the keys it depends on.

A view is a nested dict whose leaves are tree nodes, so building one costs a handful of lookups
and rendering reuses each node's cached JSON; the dependency list is what long-poll waiters are
indexed by, so a write wakes only the callers whose view it can change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitrix.metad import keyspace
from pitrix.metad.tree import Node, Tree, split_path

# ``/self/host``: the caller's own entry among its cluster's hosts.
HOST = "host"
SELF_SEGMENT = keyspace.SELF[1:]
# What a linked cluster exposes under ``/self/links/<name>``.
LINKED_SECTIONS = (keyspace.HOSTS, keyspace.CLUSTER, keyspace.ENDPOINTS, keyspace.ENV)
# Where each of those is read in the linked cluster: its ``env`` is the flat cluster-level map
# (``linked-env``, published for AppCenter-profile apps), not its per-role parameters.
LINKED_SOURCES = {s: s for s in LINKED_SECTIONS} | {keyspace.ENV: keyspace.LINKED_ENV}
SELF_SECTIONS = (
    HOST,
    keyspace.HOSTS,
    keyspace.CLUSTER,
    keyspace.ENV,
    keyspace.HEALTH,
    keyspace.CMD,
    keyspace.ADDING_HOSTS,
    keyspace.DELETING_HOSTS,
    keyspace.ENDPOINTS,
    keyspace.LINKS,
    keyspace.PUBLISHED,
    keyspace.MONITOR,
    keyspace.UPGRADE_AUDIT,
    keyspace.REBUILD_AUDIT,
    keyspace.VERTICAL_SCALING_ROLES,
)
# Sections that differ between instances of one role; every other section of ``/self`` is the
# same for all of a role's instances, so it is rendered once per change (render.SharedSections).
INSTANCE_SECTIONS = (HOST, keyspace.CMD)


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
    # Where the instance's own host entry is: "" under its role, keyspace.ROLELESS without one.
    layout: str = ""
    # Derived paths, computed once per mapping (a mapping changes rarely, is read on every request).
    key: str = field(init=False, repr=False, compare=False)
    sources: dict[str, str] = field(init=False, repr=False, compare=False)
    # The instance's own env during a rollout (keyspace.staged_env): its /self/env while present.
    staged_env: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cid, iid = self.cluster_id, self.instance_id
        object.__setattr__(self, "key", keyspace.mapping(iid))
        sources = {
            HOST: keyspace.host(cid, "" if self.layout == keyspace.ROLELESS else self.role, iid),
            # Role-scoped: the role's parameters, and the role's health check (cmd, interval, timeout).
            keyspace.ENV: keyspace.env(cid, self.role),
            keyspace.HEALTH: keyspace.health(cid, self.role),
            keyspace.MONITOR: keyspace.monitor(cid, self.role),
            keyspace.CMD: keyspace.cmd(cid, iid),
        }
        for section in SELF_SECTIONS:
            sources.setdefault(section, keyspace.section(cid, section))
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "staged_env", keyspace.staged_env(cid, iid))

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
        layout = fields.get("layout", "")
        if layout not in keyspace.LAYOUTS:
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
            layout=str(layout),
        )

    def status_key(self, *report: str) -> str:
        """Where this instance's report ``report`` (``heartbeat``, ``cmd``, ``<cmd_id>`` ...) goes."""
        return keyspace.instance_status(self.cluster_id, self.instance_id, *report)


def _owner(tree: Tree, cid: str) -> str:
    return tree.text(keyspace.owner(cid)) or ""


def _links(tree: Tree, mapping: Mapping) -> dict[str, str]:
    """Link name → linked cluster id, for links to clusters of the same owner only."""
    node = tree.live(keyspace.links(mapping.cluster_id))
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
        if section == keyspace.LINKS:
            deps.append(keyspace.links(mapping.cluster_id))
            deps.append(keyspace.owner(mapping.cluster_id))
            for name, target in _links(tree, mapping).items():
                if len(subpath) > 1 and subpath[1] != name:
                    continue
                deps.append(keyspace.owner(target))
                deps.extend(keyspace.section(target, LINKED_SOURCES[s]) for s in LINKED_SECTIONS)
        elif section in SELF_SECTIONS:
            source = mapping.sources[section]
            if subpath and section == subpath[0] and len(subpath) > 1:
                source = "/".join([source, *subpath[1:]])
            deps.append(source)
            if section == keyspace.ENV:
                staged = mapping.staged_env
                if subpath and section == subpath[0] and len(subpath) > 1:
                    staged = "/".join([staged, *subpath[1:]])
                deps.append(staged)
    return deps


def staged_env(tree: Tree, mapping: Mapping) -> Node | None:
    """The instance's staged env (an env rollout reached it before its role), if any."""
    return tree.live(mapping.staged_env)


def build(
    tree: Tree, mapping: Mapping, sections: tuple[str, ...] = SELF_SECTIONS, *, staged: bool = True
) -> dict[str, Any]:
    """The ``/self`` view (or just ``sections`` of it); absent sections are left out.

    ``staged=False`` builds what every instance of the role shares: ``env`` from the role only.
    """
    view: dict[str, Any] = {}
    for section in sections:
        if section == keyspace.LINKS:
            links: dict[str, Any] = {}
            for name, target in _links(tree, mapping).items():
                linked = {
                    s: node
                    for s in LINKED_SECTIONS
                    if (node := tree.live(keyspace.section(target, LINKED_SOURCES[s])))
                }
                if linked:
                    links[name] = linked
            if links:
                view[keyspace.LINKS] = links
        else:
            node = staged_env(tree, mapping) if staged and section == keyspace.ENV else None
            if node is None:
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
        return {SELF_SEGMENT: build(tree, mapping)}
    if parts[0] != SELF_SEGMENT:
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
    return parts[0] == SELF_SEGMENT and (len(parts) == 1 or parts[1] in SELF_SECTIONS)


def view_dependencies(tree: Tree, mapping: Mapping, path: str) -> list[str]:
    """Dependencies for instance-API ``path``; ``/`` and ``/self`` depend on the whole view."""
    parts = split_path(path)
    if parts and parts[0] == SELF_SEGMENT:
        return dependencies(tree, mapping, parts[1:])
    return dependencies(tree, mapping, [])
