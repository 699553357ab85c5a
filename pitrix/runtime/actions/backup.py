"""backup: snapshots of a cluster's volumes, made consistent by the app's hooks, kept as a record.

Accepted only from ``active`` (and only for an app that declares ``backup``); the cluster is
``backing_up`` meanwhile. A backup changes nothing of the cluster, so however its job fails the
cluster goes back to ``active`` (``always_rolls_back``) and the backup's record says ``failed``.

The steps: the record (``pending``, written before anything is taken), the app's ``backup``
command if it declares one (a dump into the volume, with its parameters), then ``pre``, the
snapshots and ``post`` in one step (``post`` runs whenever ``pre`` did), then the record
``complete``. The nodes are chosen at accept and kept in the job: every node of the backed-up
roles, or the first of each (``backup.nodes: first``).
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster, new_id
from pitrix.runtime.secret_env import service_param_context
from pitrix.runtime.steps import backup as steps
from pitrix.runtime.steps.context import JobContext

FIELDS = ("name", "params", "scheduled")
SNAPSHOT_TIMEOUT = 3600.0  # the cloud's snapshot of every volume, beyond the hooks' own timeouts
SERVICE = "backup"  # the name a password parameter of the backup command is sealed under


class BackupArgs(Args):
    backup_id: str
    name: str = ""
    scheduled: bool = False
    nodes: list[str]  # whose volumes are snapshotted, by role and index
    params: dict[str, dict[str, str]] = {}  # role -> the backup command's parameters (passwords sealed)


class BackupAction(Action[BackupArgs]):
    name = "backup"
    running = "backing_up"
    rolled_back = "active"
    always_rolls_back = True
    verb = "backup"
    arguments = BackupArgs
    summary = "back up the cluster: the app's backup command and hooks around snapshots of its volumes"
    request_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 64, "description": "a label for the backup"},
            "params": {
                "type": "object",
                "description": "parameter: value for the app's backup command",
                "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
            },
            "scheduled": {
                "type": "boolean",
                "description": "made by the cluster's backup policy (its retention applies to it)",
            },
        },
    }
    body_required = False

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        body = body or {}
        unknown = [k for k in body if k not in FIELDS]
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field (a backup request has {', '.join(FIELDS)})")
        spec = cluster.app.backup
        if spec is None:
            raise InvalidRequest(f"body: app {cluster.app.name} {cluster.app.version} declares no backup")
        name = body.get("name", "")
        if not isinstance(name, str) or len(name) > 64:
            raise InvalidRequest("name: must be a string of at most 64 characters")
        scheduled = body.get("scheduled", False)
        if not isinstance(scheduled, bool):
            raise InvalidRequest("scheduled: must be true or false")
        roles = cluster.app.backup_roles()
        present = [n for n in await desk.repo.nodes(cluster.id) if n.instance_id and n.role in roles]
        chosen = []
        for role in roles:
            of_role = sorted((n for n in present if n.role == role), key=lambda n: n.index)
            if not all(n.volume_id for n in of_role):
                raise InvalidRequest(f"body: role {role} has nodes without a volume yet")
            chosen += of_role[:1] if spec.nodes == "first" else of_role
        if not chosen:
            raise InvalidRequest(f"body: no running node of {', '.join(roles)} to back up")
        params = _params(desk, cluster, body.get("params", {}), roles)
        args = BackupArgs(
            backup_id=new_id("bk"),
            name=name,
            scheduled=scheduled,
            nodes=[n.node_id for n in chosen],
            params=params,
        )
        return Accepted(self, args)

    def plan(self, ctx: JobContext, args: BackupArgs) -> Plan:
        spec = ctx.cluster.app.backup
        assert spec is not None
        bid = args.backup_id
        plan = Plan(self.name)
        plan.then(
            as_step("record-backup", steps.record_backup, ctx, bid, args.name, args.scheduled, args.nodes)
        )
        if spec.backup is not None:
            params, secrets = _opened(ctx, args)
            timeout = spec.backup.timeout + 120.0
            plan.then(
                as_step("backup-command", steps.dump, ctx, bid, args.nodes, params, secrets, timeout=timeout)
            )
        hooks = sum(h.timeout for h in (spec.pre, spec.post) if h is not None)
        plan.then(
            as_step("snapshots", steps.snapshots, ctx, bid, args.nodes, timeout=SNAPSHOT_TIMEOUT + hooks)
        )
        plan.then(as_step("complete-backup", steps.complete, ctx, bid))
        return plan


def _params(desk: Desk, cluster: Cluster, given: Any, roles: list[str]) -> dict[str, dict[str, str]]:
    """The backup command's parameters as text: given values checked, then defaults; passwords sealed."""
    spec = cluster.app.backup
    assert spec is not None
    if not isinstance(given, dict):
        raise InvalidRequest("params: expected an object of parameter: value")
    declared = spec.backup.params if spec.backup is not None else {}
    for key in given:
        if key not in declared:
            has = ", ".join(sorted(declared)) or "none"
            raise InvalidRequest(f"params.{key}: the backup command has no parameter {key!r} (has {has})")
    values: dict[str, str] = {}
    for key, param in declared.items():
        secret = param.type == "password"
        if key in given:
            try:
                text = param.check(given[key])
            except ValueError as exc:
                raise InvalidRequest(f"params.{key}: {'not an allowed value' if secret else exc}") from None
        elif param.default is not None:
            text = param.check(param.default)
        elif param.required:
            raise InvalidRequest(f"params.{key}: required")
        else:
            continue
        values[key] = text
    out: dict[str, dict[str, str]] = {}
    for role in roles:
        out[role] = {
            key: desk.sealer.seal(text, service_param_context(cluster.id, role, SERVICE, key))
            if declared[key].type == "password"
            else text
            for key, text in values.items()
        }
    return out


def _opened(ctx: JobContext, args: BackupArgs) -> tuple[dict[str, dict[str, str]], list[str]]:
    spec = ctx.cluster.app.backup
    assert spec is not None and spec.backup is not None
    declared = spec.backup.params
    secrets: list[str] = []
    opened: dict[str, dict[str, str]] = {}
    for role, values in args.params.items():
        opened[role] = {}
        for key, value in values.items():
            if key in declared and declared[key].type == "password":
                value = ctx.sealer.open_text(value, service_param_context(ctx.cid, role, SERVICE, key))
                secrets.append(value)
            opened[role][key] = value
    return opened, secrets
