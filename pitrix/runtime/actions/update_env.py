"""update_env: parameters change batch after batch, each gated on its nodes' clean apply.

A batch that fails puts every node touched so far back on its previous values; the cluster is
then left ``active`` (rolled back), not ``failed``, and the job says why. The roles' own env is
committed to metad, and to the cluster record, only once every node has applied the new values.
Password values stay sealed in the job's arguments and the record; only the plan opens them.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.phases import role_of
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import env_context
from pitrix.runtime.spec import SpecError
from pitrix.runtime.steps import nodes, publishing, rollout
from pitrix.runtime.steps.context import JobContext

Env = dict[str, dict[str, str]]


class EnvArgs(Args):
    env: Env  # role -> the keys that change, with their new values (passwords sealed)
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
                "description": "role: {parameter: value}; values are checked against the app's parameters",
                "additionalProperties": {"type": "object"},
            }
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        """Each value is checked against its parameter (it exists, is ``changeable``, fits its type
        and range) before anything changes; keys not given keep their values."""
        env = body.get("env")
        if env is None:
            raise InvalidRequest("env: required, an object of role: {key: value}")
        if not isinstance(env, dict) or not env:
            raise InvalidRequest("env: expected an object of role: {key: value}")
        changes: Env = {}
        previous: Env = {}
        for role_name, values in env.items():
            try:
                role = cluster.app.role(role_name)
            except SpecError:
                raise InvalidRequest(f"env.{role_name}: the app has no role {role_name!r}") from None
            if not isinstance(values, dict):
                raise InvalidRequest(f"env.{role_name}: expected an object of key: value")
            current = dict(role.env_defaults(), **cluster.env.get(role_name, {}))
            for key, value in values.items():
                field = f"env.{role_name}.{key}"
                param = role.env.get(key)
                if param is None:
                    known = ", ".join(sorted(role.env)) or "none"
                    raise InvalidRequest(f"{field}: role {role_name} has no parameter {key!r} (has {known})")
                if not param.changeable:
                    raise InvalidRequest(f"{field}: is not changeable")
                secret = param.type == "password"
                try:
                    text = param.check(value)
                except ValueError as exc:
                    # A password's errors never quote it: they reach logs and other eyes.
                    raise InvalidRequest(f"{field}: {'not an allowed value' if secret else exc}") from None
                where = env_context(cluster.id, role_name, key)
                now = current.get(key)
                if secret and now is not None:
                    now = desk.sealer.open_text(now, where)
                if now != text:
                    changes.setdefault(role_name, {})[key] = desk.sealer.seal(text, where) if secret else text
                    previous.setdefault(role_name, {})[key] = current.get(key, "")
        if not changes:
            raise InvalidRequest("env: every value given is already the current one")
        return Accepted(self, EnvArgs(env=changes, previous=previous))

    def plan(self, ctx: JobContext, args: EnvArgs) -> Plan:
        node_ids = [n for n in nodes.node_ids(ctx) if role_of(n) in args.env]
        policy = ctx.cluster.app.update_policy
        plan = Plan(self.name)
        done: list[str] = []
        batches = rollout.rollout_batches(node_ids, policy.canary, policy.max_in_flight)
        for number, batch in enumerate(batches, start=1):
            name = "canary" if number == 1 and policy.canary else f"batch-{number}"
            plan.then(as_step(name, rollout.roll_env, ctx, batch, list(done), args.env, args.previous))
            done += batch
        plan.then(as_step("commit-env", publishing.commit_env, ctx, args.env))
        return plan

    def commit(self, cluster: Cluster, args: EnvArgs) -> dict[str, Any]:
        env = {role: dict(values) for role, values in cluster.env.items()}
        for role, values in args.env.items():
            env.setdefault(role, {}).update(values)
        return {"env": env}
