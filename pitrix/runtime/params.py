"""Deploy-time and changed parameter values: where each lives, and whether a request's values fit.

A request's ``env`` mixes two scopes: an object is a role's values (``{"web": {"port": 80}}``),
a plain value is a cluster-level parameter (``{"log_level": "debug"}``, declared in ``AppSpec.env``).
The spec refuses a cluster-level key named like a role, so ``env.<role>.<key>`` and ``env.<key>``
never name the same thing. Records keep cluster-level values under the pseudo-role
:data:`CLUSTER_SCOPE` (role names start with a letter, so none is spelled so), which keeps every
``{role: {key: value}}`` map (the cluster's env, env jobs' arguments, sealing) one shape.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.spec import AppSpec, EnvParam, SpecError

CLUSTER_SCOPE = "_cluster"
Env = dict[str, dict[str, str]]


class ParamError(ValueError):
    """A parameter value does not fit; the message starts with the field (``env.web.port: ...``)."""


def field(scope: str, key: str) -> str:
    """The request field a value is given as: ``env.<role>.<key>``, or ``env.<key>`` cluster-level."""
    return f"env.{key}" if scope == CLUSTER_SCOPE else f"env.{scope}.{key}"


def params_of(app: AppSpec, scope: str) -> dict[str, EnvParam]:
    """The parameters declared for ``scope`` (a role's name, or :data:`CLUSTER_SCOPE`)."""
    if scope == CLUSTER_SCOPE:
        return app.env
    return app.role(scope).env


def param(app: AppSpec, scope: str, key: str) -> EnvParam | None:
    try:
        return params_of(app, scope).get(key)
    except SpecError:
        return None


def scoped(app: AppSpec, env: Any) -> dict[str, dict[str, Any]]:
    """A request's ``env`` as ``{scope: {key: value}}``: objects are roles, plain values cluster-level."""
    if not isinstance(env, dict):
        raise ParamError("env: expected an object of role: {key: value} and cluster-level key: value")
    out: dict[str, dict[str, Any]] = {}
    roles = {r.name for r in app.roles}
    for name, value in env.items():
        if isinstance(value, dict):
            folded = {f"{name}.{k}": v for k, v in value.items()}
            if name not in roles and value and all(k in app.env for k in folded):
                # a dotted cluster-level key (AppCenter's web.console.enabled) that the CLI's
                # --env ROLE.KEY=VALUE split at its first dot
                out.setdefault(CLUSTER_SCOPE, {}).update(folded)
                continue
            if name not in roles:
                raise ParamError(f"env.{name}: the app has no role {name!r} (has {', '.join(sorted(roles))})")
            out.setdefault(name, {}).update(value)
        elif name in roles:  # never a cluster-level key: the spec refuses those named like a role
            raise ParamError(f"env.{name}: expected an object of key: value (the values of role {name})")
        else:
            out.setdefault(CLUSTER_SCOPE, {})[name] = value
    return out


def check_value(app: AppSpec, scope: str, key: str, value: Any) -> str:
    """``value`` as the text agents see, or ParamError naming the field; a password is never quoted."""
    where = field(scope, key)
    known = params_of(app, scope)
    found = known.get(key)
    if found is None:
        owner = "the app has no cluster-level" if scope == CLUSTER_SCOPE else f"role {scope} has no"
        raise ParamError(f"{where}: {owner} parameter {key!r} (has {', '.join(sorted(known)) or 'none'})")
    try:
        return found.check(value)
    except ValueError as exc:
        # check() keeps a password's value out of its messages; "value" words stay generic.
        raise ParamError(f"{where}: {exc}") from None


def deploy_env(app: AppSpec, env: Any) -> Env:
    """A create request's values, checked, as ``{scope: {key: text}}`` (passwords still clear).

    Every value is checked against its parameter, ``changeable: false`` ones too (create is the
    one time they may be set), and a ``required`` parameter with neither a default nor a value
    refuses the create, naming it.
    """
    given = scoped(app, env if env is not None else {})
    checked: Env = {}
    for scope, values in given.items():
        for key, value in values.items():
            checked.setdefault(scope, {})[key] = check_value(app, scope, key, value)
    scopes = [(CLUSTER_SCOPE, app.env), *((r.name, r.env) for r in app.roles)]
    for scope, declared in scopes:
        for key, p in declared.items():
            if p.required and p.default is None and key not in checked.get(scope, {}):
                raise ParamError(f"{field(scope, key)}: required (the app gives no default)")
    return checked


def effective(app: AppSpec, env: Env, role_name: str) -> dict[str, str]:
    """What the role's nodes see under ``/self/env``: cluster-level defaults and values, then the
    role's own defaults and values over them (a role's parameter wins, given or not)."""
    role = app.role(role_name)
    merged = {k: v for k, v in app.env_defaults().items() if k not in role.env}
    merged.update({k: v for k, v in env.get(CLUSTER_SCOPE, {}).items() if k not in role.env})
    merged.update(role.env_defaults())
    merged.update(env.get(role_name, {}))
    return merged


def by_role(app: AppSpec, env: Env) -> Env:
    """Changes as each role's nodes see them: a cluster-level key reaches every role without its own."""
    out: Env = {}
    cluster = env.get(CLUSTER_SCOPE, {})
    for role in app.roles:
        values = {k: v for k, v in cluster.items() if k not in role.env}
        values.update(env.get(role.name, {}))
        if values:
            out[role.name] = values
    return out


def view(env: Env) -> dict[str, Any]:
    """Stored env as requests spell it: roles as objects, cluster-level values at the top."""
    shown: dict[str, Any] = {k: dict(v) for k, v in env.items() if k != CLUSTER_SCOPE}
    shown.update(env.get(CLUSTER_SCOPE, {}))
    return shown
