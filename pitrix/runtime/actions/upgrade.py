"""upgrade: a cluster moves to another version of its app, batch by batch, or stays where it was.

The version is looked up as a create looks up an app for the cluster's owner (its own catalog,
then the published one, same app name), and must declare an upgrade from the cluster's version
(``upgrade.from_versions``). The env is migrated when the request is judged: parameters the new
version adds get their defaults (or the values given), those it drops go, the others keep their
values, each checked against the new version's parameter. The new spec and the migrated env are
the job's arguments (passwords sealed), so a resumed plan works on exactly what was accepted.

Each role in turn, a canary batch then batches of ``max_in_flight``, in the role's ``ordering``
(leader last): ``in_place`` delivers the new templates and env and runs the ``upgrade`` service;
``replace`` rebuilds the nodes from the new image on their kept volumes (``steps/upgrade.py``).
A failed batch moves every node touched back to the current version and the cluster is left
``active`` on it; the cluster record takes the new spec and env only when every batch passed.
``GET /v1/clusters/<id>/upgrade?version=V`` shows what would change (:meth:`Upgrade.preview`).
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime import params
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.phases import role_of
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import env_context, is_secret, seal_passwords
from pitrix.runtime.spec import AppSpec, EnvParam, Role
from pitrix.runtime.steps import nodes, operation_keys, upgrade
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.rollout import rollout_batches
from pitrix.sealing import REDACTED, Sealer

Env = dict[str, dict[str, str]]
BATCH_TIMEOUT = 3600.0  # a batch's services, its gates and, on a failure, the rollback of every node


class UpgradeArgs(Args):
    version: str  # the version upgraded to
    previous: str = ""  # the version upgraded from (what a rollback restores)
    app: AppSpec  # the new version's spec, password defaults moved into env (sealed)
    env: Env  # the migrated env, whole: scope -> key -> value (passwords sealed)
    instances: dict[str, str] = {}  # node id -> its instance when accepted (replace: who is rebuilt)


class Upgrade(Action[UpgradeArgs]):
    name = "upgrade"
    running = "upgrading"
    rolled_back = "active"
    verb = "upgrade"
    arguments = UpgradeArgs
    summary = "move the cluster to another registered version of its app (in place or by replacing nodes)"
    request_schema = {
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": {"type": "string", "description": "a registered version of the cluster's app"},
            "env": {
                "type": "object",
                "description": "values for the new version's parameters (role: {key: value}, "
                "cluster-level key: value); the others keep theirs or take their defaults",
            },
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        target, env, _ = await judge(desk, cluster, body)
        sealed = seal_passwords(cluster.model_copy(update={"app": target, "env": env}), desk.sealer)
        placed = {n.node_id: n.instance_id for n in await desk.repo.nodes(cluster.id) if n.instance_id}
        args = UpgradeArgs(
            version=target.version,
            previous=cluster.app.version,
            app=sealed.app,
            env=sealed.env,
            instances=placed,
        )
        return Accepted(self, args)

    async def preview(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
        """What an upgrade would change (the dry run): nothing is written."""
        target, env, given = await judge(desk, cluster, body)
        node_ids = [n.node_id for n in await desk.repo.nodes(cluster.id) if n.instance_id]
        return diff(cluster, target, env, given, node_ids)

    def plan(self, ctx: JobContext, args: UpgradeArgs) -> Plan:
        target = upgrade.target_context(ctx, args.app, args.env)
        node_ids = nodes.node_ids(ctx)
        by_role = {
            role.name: ids
            for role in ctx.cluster.app.roles
            if (ids := [n for n in node_ids if role_of(n) == role.name])
        }
        policy = args.app.upgrade
        replace = policy is not None and policy.policy == "replace"
        plan = Plan(self.name)
        audit = operation_keys.wanted(ctx.cluster.app, args.app)
        if audit:  # AppCenter's packages read it while their upgrade and rollback run
            versions = (ctx.cluster.app.version, args.app.version)
            plan.then(as_step("upgrade-audit", operation_keys.mark_upgrade, ctx, *versions))
        for role, ids in by_role.items():
            for number in range(1, upgrade.batch_count(args.app, len(ids)) + 1):
                name = (
                    f"{role}:canary" if number == 1 and policy and policy.canary else f"{role}:batch-{number}"
                )
                batch = (ctx, target, by_role, role, number)
                if replace:
                    step = as_step(
                        name, upgrade.upgrade_replace, *batch, args.instances, timeout=BATCH_TIMEOUT
                    )
                else:
                    step = as_step(name, upgrade.upgrade_in_place, *batch, timeout=BATCH_TIMEOUT)
                plan.then(step)
        plan.then(as_step("commit-upgrade", upgrade.commit_upgrade, ctx, target, node_ids))
        if audit:
            plan.then(as_step("clear-upgrade-audit", operation_keys.unmark, ctx, ks.UPGRADE_AUDIT))
        return plan

    def commit(self, cluster: Cluster, args: UpgradeArgs) -> dict[str, Any]:
        return {"app": args.app, "env": {scope: dict(values) for scope, values in args.env.items() if values}}


# -- judging ---------------------------------------------------------------------------------------


async def judge(desk: Desk, cluster: Cluster, body: dict[str, Any]) -> tuple[AppSpec, Env, Env]:
    """The new version's spec, the migrated env (passwords as stored: sealed ones kept sealed,
    new ones clear) and the values the request gave; InvalidRequest naming the field."""
    from pitrix.runtime.catalog import AppCatalog
    from pitrix.runtime.repository import NotFound

    body = body or {}
    unknown = sorted(set(body) - {"version", "env"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: not a field of upgrade (version, env)")
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise InvalidRequest("version: required, a registered version of the cluster's app")
    current = cluster.app
    if version == current.version:
        raise InvalidRequest(f"version: cluster {cluster.id} is on {current.name} {version} already")
    try:
        record = await AppCatalog(desk.repo.store).resolve(current.name, version, cluster.owner)
    except NotFound as exc:
        raise InvalidRequest(f"version: {exc}") from None
    target = record.spec
    if target.upgrade is None:
        raise InvalidRequest(f"version: {current.name} {version} declares no upgrade (upgrade.from_versions)")
    if not target.upgrade.allows(current.version):
        raise InvalidRequest(
            f"version: {current.name} {version} upgrades from {', '.join(target.upgrade.from_versions)}, "
            f"not from {current.version}"
        )
    have, want = [r.name for r in current.roles], [r.name for r in target.roles]
    if sorted(have) != sorted(want):
        raise InvalidRequest(
            f"version: {current.name} {version} has roles {', '.join(want)}; "
            f"the cluster has {', '.join(have)}"
        )
    env_given = body.get("env")
    if env_given is not None and not isinstance(env_given, dict):
        raise InvalidRequest("env: expected an object of role: {key: value} and cluster-level key: value")
    try:
        given = {
            scope: {key: params.check_value(target, scope, key, value) for key, value in values.items()}
            for scope, values in params.scoped(target, env_given or {}).items()
        }
    except params.ParamError as exc:
        raise InvalidRequest(str(exc)) from None
    return target, migrate_env(cluster, target, given, desk.sealer), given


def _scopes(app: AppSpec) -> list[tuple[str, dict[str, EnvParam]]]:
    return [(params.CLUSTER_SCOPE, app.env), *((r.name, r.env) for r in app.roles)]


def migrate_env(cluster: Cluster, target: AppSpec, given: Env, sealer: Sealer) -> Env:
    """The cluster's env for ``target``: values given win; a kept parameter keeps its value (if
    the new parameter accepts it); a dropped one goes; a new one has its default (not stored,
    as at create). A value the new version refuses, or a required parameter left without one,
    is an InvalidRequest naming it."""
    env: Env = {}
    for scope, declared in _scopes(target):
        old = cluster.env.get(scope, {})
        for key, param in declared.items():
            field = params.field(scope, key)
            if key in given.get(scope, {}):
                env.setdefault(scope, {})[key] = given[scope][key]
            elif key in old:
                stored = old[key]
                text = sealer.open_text(stored, env_context(cluster.id, scope, key))
                try:
                    checked = param.check(text)
                except ValueError as exc:
                    secret = param.type == "password"
                    why = "the current value is not allowed" if secret else f"the current value {exc}"
                    raise InvalidRequest(
                        f"{field}: {why} by {target.name} {target.version}; give a new value in env"
                    ) from None
                env.setdefault(scope, {})[key] = stored if stored != text else checked
            elif param.required and param.default is None:
                raise InvalidRequest(f"{field}: required by {target.name} {target.version} (no default)")
    return env


# -- the dry run -----------------------------------------------------------------------------------


def _shown(app: AppSpec, scope: str, key: str, value: str | None) -> str | None:
    if value is None:
        return None
    return REDACTED if is_secret(app, scope, key) else value


def _defaults(param: EnvParam) -> str | None:
    return param.check(param.default) if param.default is not None else None


def _param_diff(cluster: Cluster, target: AppSpec, env: Env, given: Env) -> dict[str, Any]:
    before = dict(_scopes(cluster.app))
    added: dict[str, Any] = {}
    removed: list[str] = []
    changed: dict[str, Any] = {}
    for scope, declared in _scopes(target):
        old = before.get(scope, {})
        for key, param in declared.items():
            field = params.field(scope, key)
            if key not in old:
                value = env.get(scope, {}).get(key, _defaults(param))
                added[field] = _shown(target, scope, key, value)
            elif _defaults(old[key]) != _defaults(param):
                changed[field] = {
                    "from": _shown(cluster.app, scope, key, _defaults(old[key])),
                    "to": _shown(target, scope, key, _defaults(param)),
                }
        removed += [params.field(scope, key) for key in old if key not in declared]
    scopes = {s for s, _ in _scopes(target)}
    removed += [params.field(s, k) for s, d in _scopes(cluster.app) if s not in scopes for k in d]
    values = {
        params.field(scope, key): _shown(target, scope, key, value)
        for scope, pairs in given.items()
        for key, value in pairs.items()
    }
    return {"added": added, "removed": sorted(removed), "changed_defaults": changed, "given": values}


def _names_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def _role_diff(old: Role, new: Role) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if old.image != new.image:
        out["image"] = {"from": old.image, "to": new.image}
    templates = _names_diff({t.name: t for t in old.templates}, {t.name: t for t in new.templates})
    if any(templates.values()):
        out["templates"] = templates
    service_names = _names_diff(
        {str(k): v for k, v in old.services.items()}, {str(k): v for k, v in new.services.items()}
    )
    if any(service_names.values()):
        out["services"] = service_names
    if old.health_check != new.health_check:
        out["health_check"] = "changed (reaches nodes rebuilt or created from now on)"
    return out


def diff(cluster: Cluster, target: AppSpec, env: Env, given: Env, node_ids: list[str]) -> dict[str, Any]:
    """What the upgrade would do: parameters, roles' images, templates and services, the
    policy and the batches (by index here; the role's ``ordering`` decides when it runs)."""
    policy = target.upgrade
    assert policy is not None
    roles = {}
    batches = []
    for new in target.roles:
        changes = _role_diff(cluster.app.role(new.name), new)
        if changes:
            roles[new.name] = changes
        ids = sorted((n for n in node_ids if role_of(n) == new.name), key=lambda n: nodes.split_id(n)[1])
        for number, batch in enumerate(rollout_batches(ids, policy.canary, policy.max_in_flight), 1):
            name = "canary" if number == 1 and policy.canary else f"batch-{number}"
            batches.append({"role": new.name, "name": name, "nodes": batch})
    return {
        "cluster_id": cluster.id,
        "app": target.name,
        "from": cluster.app.version,
        "to": target.version,
        "policy": policy.policy,
        "canary": policy.canary,
        "max_in_flight": policy.max_in_flight,
        "params": _param_diff(cluster, target, env, given),
        "roles": roles,
        "batches": batches,
    }
