"""Following a cluster's job step by step, for the CLI's progress display and the demo."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pitrix.cli.client import ApiClient, ApiError

LONG_POLL = 30.0  # seconds one /wait request may hold, well inside the client's request timeout

StepCallback = Callable[[dict[str, Any]], None]


async def follow(
    client: ApiClient,
    cid: str,
    job_id: str,
    on_step: StepCallback | None = None,
    timeout: float | None = 600.0,
) -> dict[str, Any]:
    """Until the job ends: call ``on_step`` for each step as it ends; returns the cluster.

    Raises ``TimeoutError`` once ``timeout`` seconds pass (the job goes on); ``None`` follows for as
    long as the job runs, as the CLI does: a person waiting detaches with Ctrl-C instead.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    reported: set[str] = set()
    while True:
        remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"cluster {cid}: job {job_id} did not end within {timeout:g}s")
        try:
            view = await client.get(
                f"/v1/clusters/{cid}/wait", job=job_id, seen=len(reported), timeout=min(LONG_POLL, remaining)
            )
        except ApiError as exc:
            if exc.status == 408:
                continue
            raise
        steps = (
            (view.get("job") or {}).get("steps", []) if (view.get("job") or {}).get("id") == job_id else []
        )
        for step in steps:
            if step["status"] != "running" and step["name"] not in reported:
                reported.add(step["name"])
                if on_step:
                    on_step(step)
        # The job's own status says when it ended (whatever state the action leads through); a newer
        # job on the cluster means ours ended before it could be seen.
        job = view.get("job") or {}
        if job.get("id") != job_id or job.get("status") != "running":
            return view


async def ended_job(client: ApiClient, cid: str, job_id: str) -> dict[str, Any]:
    """The job as it ended, with its steps: whether the action succeeded is the job's to say.

    Not the cluster's state: a rolled-back update_env leaves the cluster ``active`` and its job
    ``failed``, and by the time a follower looks, a newer job (a recover the monitor started) may
    be the one the cluster shows.
    """
    job: dict[str, Any] = await client.get(f"/v1/clusters/{cid}/jobs/{job_id}")
    return job


def job_failure(job: dict[str, Any]) -> str:
    """What a failed job says went wrong, and at which step: one line for a person or a log."""
    failed = [s for s in job.get("steps", []) if s["status"] == "failed"]
    step = max(failed, key=lambda s: s.get("finished") or s["started"]) if failed else None
    reason = job.get("error") or (step or {}).get("error") or "no reason recorded"
    if step is None:
        return f"{job['action']} failed: {reason}"
    # The runtime's error names the step already; said once is enough.
    reason = reason.removeprefix(f"step {step['name']}: ")
    return f"{job['action']} failed at step {step['name']}: {reason}"


def step_line(step: dict[str, Any]) -> str:
    seconds = (step.get("finished") or step["started"]) - step["started"]
    mark = {"done": "ok", "running": "..."}.get(step["status"], "FAILED")
    detail = step.get("error") or step.get("detail") or ""
    if step["status"] == "running" and step.get("attempt", 1) > 1:
        detail = (
            f"retrying ({step['attempt']}/{step.get('attempts', step['attempt'])}): {step.get('last_error')}"
        )
    return f"    {mark:6} {step['name']:<22} {seconds:6.2f}s  {detail}"
