"""create: a pending cluster gets its nodes, instances, agents and services, up to ``active``.

Its request is the cluster itself (``POST /v1/clusters``), so it is judged by ``prepare`` rather
than ``accept``: the spec, the images on this runtime's cloud, the counts and the links.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from pitrix.providers.addresses import provider_offers
from pitrix.runtime.actions.base import Action, Desk, InvalidRequest, NoArgs
from pitrix.runtime.actions.phases import boot, init_start
from pitrix.runtime.params import ParamError, deploy_env
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import CHANNELS, Channel, Cluster, new_id
from pitrix.runtime.secret_env import seal_passwords
from pitrix.runtime.spec import AppSpec, SpecError, parse_spec
from pitrix.runtime.steps import agents, nodes, reserved_ips, restore
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.wording import did_you_mean
from pitrix.store.types import KV

LINK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_COUNT = 1000


def count_error(count: Any) -> str | None:
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
        return f"must be a whole number from 0 to {MAX_COUNT}"
    return None


class Create(Action[NoArgs]):
    name = "create"
    running = "creating"
    sources = ("pending",)

    def plan(self, ctx: JobContext, args: NoArgs) -> Plan:
        node_ids = nodes.all_node_ids(ctx.cluster)
        plan = Plan(self.name)
        plan.then(as_step("plan-nodes", nodes.plan_nodes, ctx, ctx.cluster.counts))
        if reserved_ips.declared(ctx.cluster):  # before the instances: registration publishes them
            plan.then(as_step("reserve-ips", reserved_ips.reserve, ctx))
        boot(plan, ctx, node_ids)
        restore.extend(plan, ctx, node_ids)  # backup: a restore's command, before init (steps/restore.py)
        init_start(plan, ctx, node_ids)
        plan.then(as_step("converge", agents.converge, ctx, node_ids))
        return plan


async def prepare(
    desk: Desk,
    *,
    owner: str,
    runtime: str,
    app: dict[str, Any],
    name: str,
    counts: dict[str, int],
    links: dict[str, str],
    channel: str,
    env: Any = None,
) -> tuple[Cluster, list[KV]]:
    """The new cluster a create request describes (sealed, ``pending``), or InvalidRequest; and
    its link targets' records as read (see ``check_links``). ``env`` holds the deploy-time values
    (``{role: {key: value}, key: value}``, see :mod:`pitrix.runtime.params`); passwords among them
    are sealed before the cluster is returned, so no record ever holds them in clear."""
    if channel not in CHANNELS:
        raise InvalidRequest(f"channel: must be one of {', '.join(CHANNELS)}, got {channel!r}")
    try:
        spec = parse_spec(app)
    except SpecError as exc:
        raise InvalidRequest(f"app.{exc}") from None
    # A role without an image on this runtime's cloud fails now, naming it, not at its first VM.
    provider = (await desk.repo.runtime(runtime)).provider
    for role in spec.roles:
        try:
            role.image_for(provider)
        except SpecError as exc:
            raise InvalidRequest(f"app.{exc}") from None
    check_reserved_ips(spec, provider)
    role_counts = {r.name: r.count for r in spec.roles}
    for role_name, count in counts.items():
        if role_name not in role_counts:
            raise InvalidRequest(
                f"counts.{role_name}: the app has no role {role_name!r}"
                + did_you_mean(role_name, role_counts)
            )
        if (error := count_error(count)) is not None:
            raise InvalidRequest(f"counts.{role_name}: {error}")
        allowed = spec.role(role_name).count_range
        if allowed is not None and count not in allowed:
            shown = ", ".join(str(n) for n in allowed)
            raise InvalidRequest(f"counts.{role_name}: {count} is not one of {shown} (its count_range)")
        role_counts[role_name] = count
    try:
        values = deploy_env(spec, env)
    except ParamError as exc:
        raise InvalidRequest(str(exc)) from None
    checked, targets = await check_links(desk, owner, runtime, links)
    check_declared_links(spec, checked, targets)
    cluster = Cluster(
        id=new_id("cl"),
        name=name or spec.name,
        owner=owner,
        runtime=runtime,
        app=spec,
        counts=role_counts,
        env=values,
        links=checked,
        channel=cast(Channel, channel),
    )
    return seal_passwords(cluster, desk.sealer), targets  # a password's default moves to env, sealed


async def check_links(
    desk: Desk, owner: str, runtime: str, links: dict[str, str]
) -> tuple[dict[str, str], list[KV]]:
    """Links name clusters of the same owner on the same runtime (one metad serves both).

    Another owner's cluster is reported exactly like a missing one, so a link says nothing about
    clusters its owner cannot see. Returns the links and each target's record as read (``key`` =
    its cluster id), which the create rewrites as read in its own transaction: a target that
    changed meanwhile (a delete began) fails the create's guard, and the links are checked again.
    """
    targets: dict[str, KV] = {}
    for link, target in links.items():
        if not isinstance(link, str) or not LINK_NAME.fullmatch(link):
            raise InvalidRequest(f"links.{link}: a link name is lower case letters, digits, - and _")
        if not isinstance(target, str):
            raise InvalidRequest(f"links.{link}: must be a cluster id")
        kv = await desk.repo.cluster_kv(target)
        linked = Cluster.model_validate_json(kv.value) if kv is not None else None
        if kv is None or linked is None or linked.owner != owner:
            raise InvalidRequest(f"links.{link}: owner {owner} has no cluster {target!r}")
        targets[target] = KV(target, kv.value, kv.mod_revision)
        if linked.state in ("deleting", "deleted"):
            raise InvalidRequest(f"links.{link}: cluster {target} is {linked.state}")
        if linked.runtime != runtime:
            raise InvalidRequest(
                f"links.{link}: cluster {target} runs on runtime {linked.runtime!r}, not {runtime!r}"
            )
    return dict(links), list(targets.values())


def check_declared_links(
    spec: AppSpec, links: Mapping[str, str | None], targets: list[KV], *, complete: bool = True
) -> None:
    """The app's declared links (``AppSpec.links``): each required one given, each one pointing at
    a cluster of the app it names; with links declared, no other name. ``targets``: the linked
    clusters' records as ``check_links`` read them (``key`` = the cluster id). ``complete`` False
    (relink): ``links`` holds only the changes, a value None being a link removed, which a required
    link refuses."""
    if not spec.links:
        return
    apps = {kv.key: Cluster.model_validate_json(kv.value).app.name for kv in targets}
    for name, target in links.items():
        declared = spec.links.get(name)
        if declared is None:
            raise InvalidRequest(
                f"links.{name}: the app declares no link {name!r} (has {', '.join(sorted(spec.links))})"
            )
        if target is None:
            continue
        if declared.app and apps.get(target) != declared.app:
            raise InvalidRequest(
                f"links.{name}: cluster {target} runs app {apps.get(target)!r}, "
                f"the link wants {declared.app!r}"
            )
    for name, declared in spec.links.items():
        if declared.required and (complete or name in links) and links.get(name) is None:
            raise InvalidRequest(f"links.{name}: required (the app links to a {declared.app or 'cluster'})")


def check_reserved_ips(spec: AppSpec, provider: str) -> None:
    """An app declaring reserved IPs needs a cloud that keeps addresses (``providers.addresses``):
    refused here, before anything is created, rather than at the create's first step."""
    if spec.reserved_ips and not provider_offers(provider):
        raise InvalidRequest(
            f"app.reserved_ips: provider {provider} has no reserved addresses "
            f"(the app declares {', '.join(sorted(spec.reserved_ips))})"
        )
