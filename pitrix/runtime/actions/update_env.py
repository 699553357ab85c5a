"""update_env: parameters change batch after batch, each gated on its nodes' clean apply and health.

Each batch sees the new values in its own ``/self/env`` and ``/self/host/env`` before the role
does (``steps/rollout.py``), so every template layout follows the canary and the batches.

A batch that fails puts every node touched so far back on its previous values; the cluster is
then left ``active`` (rolled back), not ``failed``, and the job says why. The roles' own env is
committed to metad, and to the cluster record, only once every node has applied the new values.
Password values stay sealed in the job's arguments and the record; only the plan opens them.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime import params
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.phases import role_of
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import env_context
from pitrix.runtime.steps import nodes, publishing, rollout
from pitrix.runtime.steps.context import JobContext

Env = dict[str, dict[str, str]]


class EnvArgs(Args):
    env: Env  # role (or params.CLUSTER_SCOPE) -> the keys that change, new values (passwords sealed)
    previous: Env  # role -> the same keys' values before (what a rollback restores)


class UpdateEnv(Action[EnvArgs]):
    name = "update_env"
    running = "updating"
    rolled_back = "active"
    verb = "env"
    arguments = EnvArgs
    summary = "change parameters per role, rolled out to the nodes by the app's update policy"
    request_schema = {
        "type": "object",
        "required": ["env"],
        "properties": {
            "env": {
                "type": "object",
                "minProperties": 1,
                "description": (
                    "role: {parameter: value}, and cluster-level parameter: value; "
                    "values are checked against the app's parameters"
                ),
                "additionalProperties": {
                    "oneOf": [{"type": "object"}, {"type": "string"}, {"type": "number"}, {"type": "boolean"}]
                },
            }
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        """Each value is checked against its parameter (it exists, is ``changeable``, fits its type
        and constraints) before anything changes; keys not given keep their values. An object is a
        role's values, a plain value a cluster-level parameter's (see :mod:`pitrix.runtime.params`)."""
        env = body.get("env")
        if env is None:
            raise InvalidRequest("env: required, an object of role: {key: value}")
        if not isinstance(env, dict) or not env:
            raise InvalidRequest("env: expected an object of role: {key: value}")
        try:
            given = params.scoped(cluster.app, env)
        except params.ParamError as exc:
            raise InvalidRequest(str(exc)) from None
        changes: Env = {}
        previous: Env = {}
        for scope, values in given.items():
            declared = params.params_of(cluster.app, scope)
            defaults = {k: p.check(p.default) for k, p in declared.items() if p.default is not None}
            current = dict(defaults, **cluster.env.get(scope, {}))
            for key, value in values.items():
                field = params.field(scope, key)
                param = declared.get(key)
                if param is not None and not param.changeable:
                    raise InvalidRequest(f"{field}: is not changeable")
                secret = param is not None and param.type == "password"
                try:
                    text = params.check_value(cluster.app, scope, key, value)
                except params.ParamError as exc:
                    # A password's errors never quote it: they reach logs and other eyes.
                    raise InvalidRequest(f"{field}: not an allowed value" if secret else str(exc)) from None
                where = env_context(cluster.id, scope, key)
                now = current.get(key)
                if secret and now is not None:
                    now = desk.sealer.open_text(now, where)
                if now != text:
                    changes.setdefault(scope, {})[key] = desk.sealer.seal(text, where) if secret else text
                    previous.setdefault(scope, {})[key] = current.get(key, "")
        if not changes:
            raise InvalidRequest("env: every value given is already the current one")
        return Accepted(self, EnvArgs(env=changes, previous=previous))

    def plan(self, ctx: JobContext, args: EnvArgs) -> Plan:
        # Cluster-level changes reach each role that has no parameter of the same name.
        values = params.by_role(ctx.cluster.app, args.env)
        before = params.by_role(ctx.cluster.app, args.previous)
        node_ids = [n for n in nodes.node_ids(ctx) if role_of(n) in values]
        policy = ctx.cluster.app.update_policy
        plan = Plan(self.name)
        done: list[str] = []
        batches = rollout.rollout_batches(node_ids, policy.canary, policy.max_in_flight)
        for number, batch in enumerate(batches, start=1):
            name = "canary" if number == 1 and policy.canary else f"batch-{number}"
            plan.then(as_step(name, rollout.roll_env, ctx, batch, list(done), values, before))
            done += batch
        plan.then(as_step("commit-env", rollout.commit_env, ctx, node_ids, values))
        if publishing.env_publishes(ctx.cluster.app):  # endpoints' ports from env, AppCenter's linked env
            plan.then(as_step("publish-env", publishing.publish_env_sections, ctx, args.env))
        return plan

    def commit(self, cluster: Cluster, args: EnvArgs) -> dict[str, Any]:
        env = {role: dict(values) for role, values in cluster.env.items()}
        for role, values in args.env.items():
            env.setdefault(role, {}).update(values)
        return {"env": env}
