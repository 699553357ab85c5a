"""QingCloud jobs: what an asynchronous action's caller polls with DescribeJobs."""

from __future__ import annotations

import asyncio
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from simulator.vm import now_iso

_ALPHABET = string.ascii_lowercase + string.digits


def resource_id(prefix: str) -> str:
    """A QingCloud-style id: ``i-`` / ``j-`` and eight lowercase letters or digits."""
    return prefix + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


@dataclass
class Job:
    job_id: str
    job_action: str
    resource_ids: list[str]
    status: str = "pending"  # pending → working → successful | failed
    create_time: str = field(default_factory=now_iso)
    status_time: str = field(default_factory=now_iso)
    error: str = ""
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # in-process waiters

    def advance(self, status: str, error: str = "") -> None:
        self.status = status
        self.status_time = now_iso()
        self.error = error
        if status in ("successful", "failed"):
            self.finished.set()

    def describe(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "job_id": self.job_id,
            "job_action": self.job_action,
            "resource_ids": ",".join(self.resource_ids),
            "status": self.status,
            "create_time": self.create_time,
            "status_time": self.status_time,
            "owner": "usr-simulator",
        }
        if self.error:
            item["error_msg"] = self.error
        return item


class JobBook:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def new(self, action: str, resource_ids: list[str]) -> Job:
        job = Job(resource_id("j"), action, list(resource_ids))
        self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())
