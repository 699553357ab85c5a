"""Driving clusters to a target through a pitrixd that may die at any moment.

A request that meets a dead pitrixd waits for the restart and asks again; a create whose answer
was lost is found again by its name, an action whose answer was lost shows as the cluster's state.
So the client never guesses, and whatever the daemon lost is counted against it, not hidden.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.stack import Stack
from pitrix.cli.client import ApiError
from pitrix.cli.http import HttpConnectionError, HttpPayloadError

TRANSITIONAL = {"pending", "creating", "scaling_out", "scaling_in", "deleting", "stopping", "starting"}


@dataclass
class Tally:
    operations: int = 0
    kills: int = 0
    retries: int = 0  # failed jobs a client had to retry
    reasked: int = 0  # requests that met a dead pitrixd and were sent again
    cloud_retries: int = 0  # cloud calls and steps pitrixd itself tried again (its log says)
    errors: list[str] = field(default_factory=list)

    def line(self, name: str, faults: int, lost: int) -> str:
        recovered = self.kills + self.reasked + self.retries + self.cloud_retries
        return (
            f"CHAOS {name}: operations={self.operations} faults_injected={faults} "
            f"recovered={recovered} (restarts {self.kills}, re-asked {self.reasked}, "
            f"job retries {self.retries}, cloud retries {self.cloud_retries}) "
            f"lost={lost}"
        )


class Driver:
    def __init__(self, stack: Stack, tally: Tally) -> None:
        self.stack = stack
        self.tally = tally
        self.up = asyncio.Event()
        self.up.set()

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """One API call; across a pitrixd kill it waits for the restart and asks again."""
        while True:
            await self.up.wait()
            try:
                async with self.stack.api() as api:
                    return await api.request(method, path, body, **params)
            except (HttpConnectionError, HttpPayloadError, TimeoutError):
                self.tally.reasked += 1
                await self.up.wait()
            except ApiError as exc:
                if exc.status in (500, 502, 503) and not self.up.is_set():
                    continue
                raise

    async def kill_and_restart(self) -> None:
        self.up.clear()
        try:
            await self.stack.kill_pitrixd()
            await self.stack.start_pitrixd()
        finally:
            self.up.set()
        self.tally.kills += 1

    async def killer(self, kills: int, done: asyncio.Event, low: float = 0.3, high: float = 3.0) -> None:
        """SIGKILL pitrixd ``kills`` times at random moments (a timer picks the moment: that is the
        point of it), restarting it each time; stops early once the work is done."""
        for _ in range(kills):
            try:
                await asyncio.wait_for(done.wait(), random.uniform(low, high))
                return
            except TimeoutError:
                await self.kill_and_restart()

    async def create(self, app: dict[str, Any], name: str) -> str:
        self.tally.operations += 1
        try:
            async with self.stack.api() as api:
                created = await api.post("/v1/clusters", {"runtime": "sim", "app": app, "name": name})
            return str(created["cluster"]["id"])
        except (HttpConnectionError, HttpPayloadError, TimeoutError):
            self.tally.reasked += 1
        # The answer was lost: the cluster exists if pitrixd accepted it before it died.
        listed = await self.call("GET", "/v1/clusters", all="1")
        for cluster in listed["clusters"]:
            if cluster.get("name") == name:
                return str(cluster["id"])
        return await self.create(app, name)

    async def settle(self, cid: str, max_retries: int = 10) -> dict[str, Any]:
        """The cluster once no job is running on it; a failed job is retried (and counted), up to
        ``max_retries`` times: a job that fails again and again is stuck, and reported as such."""
        retries = 0
        while True:
            view: dict[str, Any] = await self.call("GET", f"/v1/clusters/{cid}")
            if view["state"] in TRANSITIONAL:
                try:
                    await self.call("GET", f"/v1/clusters/{cid}/wait", timeout=60)
                except ApiError as exc:
                    if exc.status != 408:
                        raise
                continue
            if view["state"] == "failed" and retries < max_retries:
                retries += 1
                self.tally.retries += 1
                self.tally.errors.append(f"{cid}: {view.get('last_error')}")
                await self.call("POST", f"/v1/clusters/{cid}/retry")
                continue
            return view

    async def reach(self, cid: str, state: str, role: str | None = None, count: int | None = None) -> bool:
        """Drive the cluster until it is in ``state`` (with ``count`` nodes of ``role``)."""
        while True:
            view = await self.settle(cid)
            have = Counter(n["role"] for n in view.get("nodes", []))
            if view["state"] == state and (role is None or have[role] == count):
                return True
            try:
                if state == "deleted":
                    await self.call("DELETE", f"/v1/clusters/{cid}")
                elif role is not None and view["state"] == "active":
                    await self.call("POST", f"/v1/clusters/{cid}/scale", {"role": role, "count": count})
                else:
                    return False
            except ApiError as exc:
                if exc.status != 409:  # 409: an action is already under way; settle again
                    raise
            self.tally.operations += 1


async def stuck_report(driver: Driver, cids: list[str]) -> str:
    """Where each cluster is, for a failure message: state, job and its steps."""
    lines = []
    for cid in cids:
        view = await driver.call("GET", f"/v1/clusters/{cid}")
        job = view.get("job") or {}
        steps = [f"{s['name']}:{s['status']}" for s in job.get("steps", [])]
        lines.append(f"{cid} {view['state']} job {job.get('id')} {job.get('status')} {steps}")
    return "\n".join(lines)


def leaks_and_duplicates(
    ledger: list[dict[str, Any]], kept: set[str], metadata_alive: bool, live_only: bool = False
) -> tuple[list[str], dict[str, int]]:
    """VMs alive that no remaining cluster owns; names the cloud created more than once (with
    ``live_only``, alive at once: a VM whose boot failed is rightly replaced under its name)."""
    alive = [vm for vm in ledger if vm["status"] not in ("terminated", "ceased")]
    leaked = [
        vm["instance_id"]
        for vm in alive
        if vm["instance_id"] not in kept and not (metadata_alive and vm.get("image") == "pitrix-metadata")
    ]
    names = Counter(vm["name"] for vm in (alive if live_only else ledger))
    return leaked, {name: n for name, n in names.items() if n > 1}
