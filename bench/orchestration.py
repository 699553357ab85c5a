"""Orchestration overhead: create request accepted → `active`, with nothing else to wait for.

A private simulator (boot delay 0) and a real pitrixd as processes; the app is one role of 3 nodes
whose service commands are `true`, so the time is pitrix's own: plans, journal, cloud API calls,
metadata registration and the agents' command round trips. The first cluster of the owner also
creates the owner's metadata cluster (a VM with etcd and metad): it is measured apart, and every
other figure is taken with it already running. pitrixd's CPU seconds and memory come from /proc,
and so do the simulator's (its API process, its light workers) and the metadata VM's pitrix-metad's,
so a row says which process bounds it. In light mode the simulator's light VMs run in worker
processes (``pitrix-sim --light --light-workers 2``): with them the simulator is no longer the
bottleneck, and the owner's one metadata VM's metad is the busiest process of a row (every agent of
every cluster bootstraps its certificate there and reports to it), ahead of pitrixd.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, profiling
from bench.stack import TRIVIAL_APP, Stack, cpu_of, metad_pids, running_stack, wait_state
from bench.table import Table, ms, p50_p99, percentile
from pitrix.cli.client import ApiClient, ApiError

TITLE = "Orchestration overhead: create accepted → active"
# Light mode's simulator runs its light VMs (SSH servers, agents) in this many worker processes, so
# that a thousand clusters at once measure pitrixd rather than the simulator's one loop.
LIGHT_WORKERS = 2


def trivial_app(patience: float) -> dict[str, Any]:
    """The trivial app with service timeouts as long as the bench waits: under a thousand clusters
    at once a `true` may wait its turn for long, and the figure is how long, not whether in 30 s."""
    app = copy.deepcopy(TRIVIAL_APP)
    for role in app["roles"]:
        # The demo image re-renders and runs Python check and reload commands at every host
        # change: under many clusters at once that, not pitrix, is what a row would measure.
        role["image"] = "plain"
        for service in role["services"].values():
            service["timeout"] = max(int(service["timeout"]), int(patience))
    return app


async def create(
    api: ApiClient, name: str, channel: str = "rest", patience: float = 300.0
) -> tuple[str, float, str]:
    """Create one cluster: its id, the seconds from the 202 to its end (at most ``patience``), and
    why it did not become `active` ("" when it did)."""
    body = {"runtime": "sim", "app": trivial_app(patience), "name": name, "channel": channel}
    created = await api.post("/v1/clusters", body)
    accepted = time.monotonic()
    cid = created["cluster"]["id"]
    try:
        view = await wait_state(api, cid, created["job"]["id"], timeout=patience)
    except RuntimeError as exc:
        return cid, time.monotonic() - accepted, str(exc)
    took = time.monotonic() - accepted
    if view["state"] != "active":
        return cid, took, f"cluster {cid} ended {view['state']}: {view.get('last_error')}"
    return cid, took, ""


async def create_active(
    api: ApiClient, name: str, channel: str = "rest", patience: float = 300.0
) -> tuple[str, float]:
    """Create one cluster; its id and the seconds from the 202 to `active` (an error if it is not)."""
    cid, took, error = await create(api, name, channel, patience)
    if error:
        raise RuntimeError(error)
    return cid, took


async def delete_all(api: ApiClient, cids: list[str], problems: list[str]) -> None:
    """Delete the clusters (not measured); a delete that goes wrong is noted, not fatal to the figures."""
    patience = wait_for(len(cids))

    async def one(cid: str) -> None:
        try:
            job = (await api.delete(f"/v1/clusters/{cid}"))["job"]
            view = await wait_state(api, cid, job["id"], timeout=patience)
            if view["state"] != "deleted":
                problems.append(f"delete of {cid} ended {view['state']}: {view.get('last_error')}")
        except (RuntimeError, ApiError) as exc:
            problems.append(f"delete: {exc}")

    await asyncio.gather(*(one(c) for c in cids))


async def concurrent(
    api: ApiClient,
    stack: Stack,
    k: int,
    problems: list[str],
    channel: str,
    clean_up: bool = True,
    profile: Path | None = None,
) -> dict[str, Any]:
    """k clusters created at once. One that fails is counted and named, not fatal: at 1,000 the
    figure of the others, and how many did not make it, are the finding. ``clean_up`` deletes them
    (so the next row starts from the same state); the last row leaves them to the stack's end.
    ``profile``: a directory where py-spy's samples of pitrixd during the row are written
    (``pitrixd-<k>.txt``, collapsed stacks) with their summary (``pitrixd-<k>.summary``)."""
    assert stack.pitrixd is not None and stack.sim is not None
    pid = stack.pitrixd.pid
    workers = list(stack.sim.ready.get("light_worker_pids") or [])
    sim_cpu0 = sim_cpu(stack.sim.pid, workers)
    metads = metad_pids(stack.workdir)
    metad_cpu0 = cpu_of(metads)
    cpu0, rss0 = procs.cpu_seconds(pid), procs.memory_kib(pid)
    began = time.monotonic()
    patience = wait_for(k)
    async with contextlib.AsyncExitStack() as watched:
        if profile is not None:
            await watched.enter_async_context(profiling.sampling(pid, profile / f"pitrixd-{k}.txt"))
        results = await asyncio.gather(*(create(api, f"c{k}-{i}", channel, patience) for i in range(k)))
        wall = time.monotonic() - began
    failed = [error for _c, _t, error in results if error]
    if len(failed) == k:
        raise RuntimeError(f"none of {k} concurrent clusters became active; the first: {failed[0]}")
    figures = {
        "k": k,
        "wall": wall,
        "each": [t for _c, t, error in results if not error],
        "failed": len(failed),
        "cpu_per_cluster": (procs.cpu_seconds(pid) - cpu0) / k,
        "peak_mib_per_cluster": max(0, procs.memory_kib(pid, "VmHWM") - rss0) / k / 1024,
        "rss_mib": procs.memory_kib(pid) / 1024,
        "pitrixd_cpu": procs.cpu_seconds(pid) - cpu0,
        "sim_cpu": [b - a for a, b in zip(sim_cpu0, sim_cpu(stack.sim.pid, workers), strict=True)],
        "metad_cpu": cpu_of(metads) - metad_cpu0,
    }
    if profile is not None and (samples := profile / f"pitrixd-{k}.txt").exists():
        text = profiling.summary(profiling.load(samples))
        (profile / f"pitrixd-{k}.summary").write_text(text + "\n")
    if failed:
        problems.append(
            f"{len(failed)} of {k} concurrent clusters did not become active; the first: {failed[0]}"
        )
    if clean_up:
        await delete_all(api, [c for c, _t, _e in results], problems)
    return figures


def sim_cpu(api_pid: int, workers: list[int]) -> tuple[float, float]:
    """CPU seconds of the simulator so far: its API process (with the commands its VMs' agents ran
    and it reaped) and its light workers (likewise)."""

    def whole(pid: int) -> float:
        return procs.cpu_seconds(pid) + procs.cpu_seconds(pid, children=True)

    return whole(api_pid), sum(whole(w) for w in workers)


def wait_for(clusters: int) -> float:
    """How long to wait for one of ``clusters`` jobs run at once: they share two cores, so the last
    one ends about when all of them would have, one after the other (about a second each here)."""
    return 300.0 + 1.5 * clusters


def light_mode_available() -> bool:
    """Whether the simulator has grown a light mode (in-process agents), for 100s of clusters."""
    usage = subprocess.run([procs.bin_path("pitrix-sim"), "--help"], capture_output=True, text=True)
    return "--light" in usage.stdout


# The most one row may take: past it the report would wait on a figure the row before already told.
ROW_BUDGET = 20 * 60.0


def too_long(before: dict[str, Any], k: int) -> str:
    """Why ``k`` clusters at once are not run after ``before``, or "" to run them. The estimate is
    linear in k, which is kind: the time of the last cluster grows at least that fast here."""
    estimate = before["wall"] * k / before["k"]
    if estimate <= ROW_BUDGET:
        return ""
    return (
        f"{k:,} concurrent not run: {before['k']:,} took {before['wall']:.0f} s, so {k:,} would take "
        f"at least ~{estimate / 60:.0f} min (the budget of one row is {ROW_BUDGET / 60:.0f} min)"
    )


async def measure(
    singles: int,
    ks: list[int],
    sim_args: tuple[str, ...] = (),
    channel: str = "rest",
    profile: Path | None = None,
) -> dict[str, Any]:
    """The figures of one stack; light VMs run no userdata, so there the agents come over ssh."""
    workdir = Path(tempfile.mkdtemp(prefix="pitrix-bench-orch-"))
    out: dict[str, Any] = {"problems": []}
    try:
        async with running_stack(workdir, *sim_args) as stack, stack.api() as api:
            _first, out["first"] = await create_active(api, "first", channel)
            one = []
            for i in range(singles):
                cid, took = await create_active(api, f"one-{i}", channel)
                one.append(took)
                await delete_all(api, [cid], out["problems"])
            out["one"] = one
            out["concurrent"] = []
            for n, k in enumerate(ks):
                if out["concurrent"] and (skip := too_long(out["concurrent"][-1], k)):
                    out["skipped"] = skip
                    break
                last = n == len(ks) - 1
                row = await concurrent(
                    api, stack, k, out["problems"], channel, clean_up=not last, profile=profile
                )
                out["concurrent"].append(row)
            # Not measured, and the stack's end takes every VM down: the clusters left are not deleted.
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return out


async def run(quick: bool) -> list[Table]:
    singles, ks = (3, [5]) if quick else (5, [10, 30])
    full = await measure(singles, ks)
    table = figures_table("Full mode (every node a VM with its own pitrix-agent process)", full, singles)
    table.notes += [
        "target: one 3-node cluster under 1 s of overhead; 100 concurrent clusters under 30 s",
        "peak MiB per cluster: pitrixd's peak RSS during the run above its RSS before, over the clusters",
        f"full mode holds {max(ks)} concurrent clusters here ({3 * max(ks)} agent processes beside "
        "pitrixd, the simulator and the metadata VM)",
    ]
    table.notes += verdicts(full)
    table.notes += [f"problem seen (not measured): {p}" for p in full["problems"]]
    tables = [table]
    if not light_mode_available():
        table.notes.append("light mode (100 and 1,000 clusters): not measured, no `pitrix-sim --light`")
        return tables
    light_ks = [20] if quick else [100, 1000]
    tables.append(await light_rows(singles, light_ks, LIGHT_WORKERS))
    return tables


async def light_rows(singles: int, ks: list[int], workers: int, profile: Path | None = None) -> Table:
    """The light-mode table: pitrixd on a simulator whose light VMs run in ``workers`` processes."""
    sim_args = ("--light", "--light-workers", str(workers))
    light = await measure(singles, ks, sim_args, "ssh", profile)
    where = f", in {workers} light workers" if workers > 1 else ""
    lt = figures_table(
        f"Light mode (the simulator's in-process SSH and agents{where}; pitrixd as in full mode)",
        light,
        singles,
    )
    lt.notes.append(
        "channel ssh: a light VM runs no userdata, so pitrixd writes each agent's files and starts it "
        "over SSH (bootstrap-agents), a step the full-mode clusters (channel rest) do not have"
    )
    if workers > 1:
        lt.notes.append(
            f"`pitrix-sim --light --light-workers {workers}`: the light VMs' SSH servers and agents run "
            f"in {workers} worker processes, the API process keeps the cloud's books"
        )
    lt.notes.append(
        "CPU s: the whole row's, each process with the commands it reaped; metad: the owner's "
        "metadata VM's pitrix-metad, which every agent of every cluster reports to"
    )
    lt.notes += verdicts(light)
    if "skipped" in light:
        lt.notes.append(light["skipped"])
    lt.notes += [f"problem seen (not measured): {p}" for p in light["problems"]]
    return lt


def figures_table(title: str, figures: dict[str, Any], singles: int) -> Table:
    """One stack's rows: its first cluster, the singles, then each concurrent row."""
    table = Table(
        title,
        [
            "clusters (3 nodes each)",
            "each: accepted → active",
            "all active (wall)",
            "pitrixd CPU s / cluster",
            "pitrixd peak MiB / cluster",
            "CPU s: pitrixd / simulator API / light workers / metad",
        ],
    )
    table.add("first (creates the metadata cluster)", ms(figures["first"]) + " (once)", "-", "-", "-", "-")
    table.add(f"1 ({singles} in a row)", p50_p99(figures["one"]), "-", "-", "-", "-")
    for c in figures["concurrent"]:
        table.add(
            f"{c['k']:,} concurrent" + (f" ({c['failed']} failed)" if c["failed"] else ""),
            p50_p99(c["each"]),
            ms(c["wall"]),
            f"{c['cpu_per_cluster']:.3f}",
            f"{c['peak_mib_per_cluster']:.2f}",
            f"{c['pitrixd_cpu']:.0f} / {c['sim_cpu'][0]:.0f} / {c['sim_cpu'][1]:.0f} / {c['metad_cpu']:.0f}",
        )
    return table


def verdicts(figures: dict[str, Any]) -> list[str]:
    """The figures against issue 10's targets, said in words (1 cluster < 1 s, 100 clusters < 30 s)."""
    one = percentile(figures["one"], 50)
    said = [f"one cluster: p50 {ms(one)} ms, {'within' if one < 1 else 'over'} the 1 s target"]
    for c in figures["concurrent"]:
        if c["k"] == 100:
            ok = "within" if c["wall"] < 30 and not c["failed"] else "over"
            said.append(f"100 concurrent clusters all active in {c['wall']:.1f} s, {ok} the 30 s target")
    return said


def main() -> None:
    """``python -m bench.orchestration --light-only --clusters 1000 [--light-workers 2]``: one light row."""
    import argparse
    import resource

    from pitrix import aio, logs

    parser = argparse.ArgumentParser(prog="python -m bench.orchestration", description=TITLE)
    parser.add_argument("--clusters", type=int, action="append", help="a concurrent row (repeatable)")
    parser.add_argument("--light-workers", type=int, default=LIGHT_WORKERS)
    parser.add_argument("--singles", type=int, default=1)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample pitrixd with py-spy during each row; stacks and their summary go to DIR",
    )
    args = parser.parse_args()
    if args.light_workers < 1 or any(k < 1 for k in args.clusters or []):
        parser.error("--clusters and --light-workers: at least 1")
    if args.profile is not None and not profiling.available():
        parser.error("--profile: py-spy is not installed")
    logs.configure("error")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of VMs' sockets
    table = aio.run(light_rows(args.singles, args.clusters or [1000], args.light_workers, args.profile))
    print(table.text())


if __name__ == "__main__":
    main()
