"""AppCenter's operation keys: metadata that says an operation is running, for the nodes' scripts.

AppCenter-profile packages tell an upgrade, a recover or a resize from an ordinary restart by
reading ``/self/upgrade-audit/{from_app_version,to_app_version}``, ``/self/rebuild-audit`` or
``/self/vertical-scaling-roles`` while their services run. The action writes its key before the
first node command and removes it after the last (both idempotent: a resumed job writes or
removes the same value again); a job that fails removes it too (``clear_all``, from the
supervisor), so the key is never left behind by an operation that is over.
"""

from __future__ import annotations

from pitrix.metad import keyspace as ks
from pitrix.metad.client import MetadManagementClient
from pitrix.runtime.spec import AppSpec
from pitrix.runtime.steps.context import JobContext

SECTIONS = (ks.UPGRADE_AUDIT, ks.REBUILD_AUDIT, ks.VERTICAL_SCALING_ROLES)
# The actions that write one, and which.
BY_ACTION = {"upgrade": ks.UPGRADE_AUDIT, "recover": ks.REBUILD_AUDIT, "resize": ks.VERTICAL_SCALING_ROLES}


def wanted(*apps: AppSpec) -> bool:
    """Whether the app (either of an upgrade's two versions) reads operation keys."""
    return any(app.profile == "appcenter" for app in apps)


async def mark_upgrade(ctx: JobContext, from_version: str, to_version: str) -> str:
    values = {"from_app_version": from_version, "to_app_version": to_version}
    revision = await ctx.metad.post_data(ks.section(ctx.cid, ks.UPGRADE_AUDIT), values)
    return f"{ks.UPGRADE_AUDIT} {from_version} -> {to_version} at revision {revision}"


async def mark_rebuild(ctx: JobContext, node_ids: list[str]) -> str:
    """The nodes a recover replaces, comma-separated."""
    text = ",".join(node_ids)
    revision = await ctx.metad.post_data(ks.section(ctx.cid, ks.REBUILD_AUDIT), text)
    return f"{ks.REBUILD_AUDIT} {text} at revision {revision}"


async def mark_vertical_scaling(ctx: JobContext, roles: list[str]) -> str:
    """The roles a resize changes, comma-separated, in the order it resizes them."""
    text = ",".join(roles)
    revision = await ctx.metad.post_data(ks.section(ctx.cid, ks.VERTICAL_SCALING_ROLES), text)
    return f"{ks.VERTICAL_SCALING_ROLES} {text} at revision {revision}"


async def unmark(ctx: JobContext, section: str) -> str:
    revision = await ctx.metad.delete_data(ks.section(ctx.cid, section))
    return f"{section} removed at revision {revision}"


async def clear_all(metad: MetadManagementClient, cid: str) -> None:
    """Every operation key of the cluster removed (a failed job's, whatever it wrote)."""
    for section in SECTIONS:
        await metad.delete_data(ks.section(cid, section))
