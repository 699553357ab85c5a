"""Password parameters: sealed in every record that holds them, opened only on the way to the nodes.

A ``password`` parameter's value is sealed as it enters pitrixd (update_env, or the spec's default
at create, which moves out of the stored spec into the cluster's env), and stays sealed in the
cluster record, in env jobs' arguments and in the runtime's memory. It is opened only to build
what the cluster's own nodes read from metad (``/self/env``), and views show it as ``******``.
A value stored in clear before sealing existed is sealed when its cluster is next read.
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace
from pitrix.runtime.records import Cluster, Job
from pitrix.runtime.spec import Role
from pitrix.sealing import REDACTED, Sealer, is_sealed


def env_context(cid: str, role: str, key: str) -> str:
    """Where a parameter's value lives: a sealed value opens for that cluster, role and key only."""
    return keyspace.env_value(cid, role, key)


def service_param_context(cid: str, role: str, service: str, key: str) -> str:
    """Where a custom service's password parameter was given: it opens for that run's plan only."""
    return f"{keyspace.CLUSTERS}/{cid}/custom-services/{role}/{service}/{key}"


def is_password(role: Role, key: str) -> bool:
    param = role.env.get(key)
    return param is not None and param.type == "password"


def seal_passwords(cluster: Cluster, sealer: Sealer) -> Cluster:
    """``cluster`` with every password value sealed and no password default left in its spec."""
    env = {role: dict(values) for role, values in cluster.env.items()}
    roles = []
    changed = False
    for role in cluster.app.roles:
        params = dict(role.env)
        for key, param in role.env.items():
            if param.type != "password":
                continue
            values = env.setdefault(role.name, {})
            if param.default is not None:
                values.setdefault(key, param.check(param.default))
                params[key] = param.model_copy(update={"default": None})
                changed = True
            value = values.get(key)
            if value is not None and not is_sealed(value):
                values[key] = sealer.seal(value, env_context(cluster.id, role.name, key))
                changed = True
        roles.append(role.model_copy(update={"env": params}) if params != role.env else role)
    if not changed:
        return cluster
    env = {role: values for role, values in env.items() if values}
    app = cluster.app.model_copy(update={"roles": roles})
    return cluster.model_copy(update={"app": app, "env": env})


def seal_job(job: Job, cluster: Cluster, sealer: Sealer) -> Job:
    """An env job of ``cluster`` with its password values sealed (one written before sealing)."""
    args = dict(job.args)
    changed = False
    for name in ("env", "previous"):
        values = args.get(name)
        if not isinstance(values, dict):
            continue
        sealed: dict[str, dict[str, str]] = {}
        for role_name, pairs in values.items():
            role = next((r for r in cluster.app.roles if r.name == role_name), None)
            sealed[role_name] = dict(pairs)
            for key, value in pairs.items():
                if role is not None and is_password(role, key) and value and not is_sealed(value):
                    sealed[role_name][key] = sealer.seal(value, env_context(cluster.id, role_name, key))
                    changed = True
        args[name] = sealed
    return job.model_copy(update={"args": args}) if changed else job


def _opened(cid: str, env: dict[str, dict[str, str]], sealer: Sealer) -> dict[str, dict[str, str]]:
    return {
        role: {key: sealer.open_text(value, env_context(cid, role, key)) for key, value in values.items()}
        for role, values in env.items()
    }


def open_cluster(cluster: Cluster, sealer: Sealer) -> Cluster:
    """A copy with real values, for the steps that publish the env to the cluster's own nodes."""
    return cluster.model_copy(update={"env": _opened(cluster.id, cluster.env, sealer)})


def open_job(job: Job, sealer: Sealer) -> Job:
    """A copy of an env job with its values opened, for the plan that rolls them out."""
    args = dict(job.args)
    for name in ("env", "previous"):
        if isinstance(args.get(name), dict):
            args[name] = _opened(job.cluster_id, args[name], sealer)
    return job.model_copy(update={"args": args})


def env_view(cluster: Cluster) -> dict[str, dict[str, str]]:
    """The env as the API shows it: a password parameter (sealed or not) as ``******``."""
    shown: dict[str, dict[str, str]] = {}
    for role_name, values in cluster.env.items():
        role = next((r for r in cluster.app.roles if r.name == role_name), None)
        shown[role_name] = {
            key: REDACTED if is_sealed(value) or (role is not None and is_password(role, key)) else value
            for key, value in values.items()
        }
    return shown


def cluster_view_data(cluster: Cluster) -> dict[str, Any]:
    """The cluster record as the API shows it (the app by name and version, passwords hidden)."""
    data = cluster.model_dump(mode="json")
    data["app"] = {"name": cluster.app.name, "version": cluster.app.version}
    data["env"] = env_view(cluster)
    data["custom_services"] = custom_services_view(cluster)
    return data


def custom_services_view(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The app's custom services by name: the roles offering each, what it says and its parameters."""
    shown: dict[str, dict[str, Any]] = {}
    for role in cluster.app.roles:
        for name, service in role.custom_services.items():
            entry = shown.setdefault(name, {"roles": [], "description": service.description, "params": {}})
            entry["roles"].append(role.name)
            entry["description"] = entry["description"] or service.description
            for key, param in service.params.items():
                entry["params"].setdefault(key, param.model_dump(mode="json", exclude={"changeable"}))
    return shown
