"""The simulated cloud's snapshots: each a copy of one volume's data directory, kept by the simulator.

A snapshot's data lives in ``<state>/snapshots/<snapshot_id>/data``. It is copied into a temporary
directory beside it and renamed into place, so a snapshot either holds the whole copy or does not
exist yet; a volume made from it starts as a copy of that directory (copied and renamed the same
way). Snapshots outlive the volume they were taken of, as QingCloud's do.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import BAD_STATUS, NOT_FOUND, ApiError
from simulator.jobs import resource_id
from simulator.listing import newest_matching
from simulator.vm import now_iso

STATUSES = frozenset({"pending", "available", "suspended", "deleted", "ceased"})


@dataclass
class SimSnapshot:
    snapshot_id: str
    name: str
    volume_id: str
    size: int
    home: Path  # <state>/snapshots/<snapshot_id>
    status: str = "pending"
    transition_status: str = "creating"
    create_time: str = field(default_factory=now_iso)
    status_time: str = field(default_factory=now_iso)
    delete_time: str = ""

    @property
    def data(self) -> Path:
        return self.home / "data"

    def set_status(self, status: str, transition: str = "") -> None:
        self.status = status
        self.transition_status = transition
        self.status_time = now_iso()

    def describe(self, volume_name: str) -> dict[str, Any]:
        """A ``snapshot_set`` entry, shaped as QingCloud's DescribeSnapshots answers."""
        return {
            "snapshot_id": self.snapshot_id,
            "snapshot_name": self.name,
            "description": "",
            "snapshot_type": 1,  # full: every snapshot here is a whole copy
            "status": self.status,
            "transition_status": self.transition_status,
            "create_time": self.create_time,
            "status_time": self.status_time,
            "is_head": 1,
            "root_id": self.snapshot_id,
            "parent_id": "self",
            "size": self.size,
            "total_size": self.size,
            "resource": {
                "resource_id": self.volume_id,
                "resource_name": volume_name,
                "resource_type": "volume",
            },
        }

    def ledger_entry(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "name": self.name,
            "volume_id": self.volume_id,
            "size": self.size,
            "status": self.status,
            "path": str(self.data),
            "created": self.create_time,
            "deleted": self.delete_time or None,
        }


def copy_atomically(source: Path, target: Path) -> None:
    """``target`` becomes a copy of the directory ``source``: copied beside it, then renamed, so
    a reader never finds half a copy (symlinks are copied as links)."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        try:
            shutil.copytree(source, staging, symlinks=True)
        except shutil.Error as exc:
            # A file the guest removed while it was copied (a live volume, as a cloud snapshots one)
            # is simply not in the copy; anything else is a real failure.
            if not all(_vanished(error) for error in exc.args[0]):
                raise
    else:
        staging.mkdir()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _vanished(error: object) -> bool:
    """Whether one of copytree's errors is a source file that no longer exists."""
    source = error[0] if isinstance(error, tuple) and error else None
    return isinstance(source, str) and not Path(source).exists()


class SnapshotBook:
    """Every snapshot ever taken (deleted ones too: the ledger), by id."""

    def __init__(self, snapshots_dir: Path) -> None:
        self.dir = snapshots_dir
        self._snapshots: dict[str, SimSnapshot] = {}

    def new(self, name: str, volume_id: str, size: int) -> SimSnapshot:
        sid = resource_id("ss")
        while sid in self._snapshots:
            sid = resource_id("ss")
        snapshot = SimSnapshot(sid, name, volume_id, size, self.dir / sid)
        self._snapshots[sid] = snapshot
        return snapshot

    def existing(self, snapshot_ids: list[str]) -> list[SimSnapshot]:
        """The snapshots, none deleted (2100 names the first unknown one)."""
        found = []
        for sid in snapshot_ids:
            snapshot = self._snapshots.get(sid)
            if snapshot is None or snapshot.status in ("deleted", "ceased"):
                raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{sid}] not found")
            found.append(snapshot)
        return found

    def usable(self, snapshot_id: str) -> SimSnapshot:
        """A snapshot a volume can be made from (2500 while it is still being taken)."""
        snapshot = self.existing([snapshot_id])[0]
        if snapshot.status != "available" or snapshot.transition_status:
            raise ApiError(
                BAD_STATUS,
                f"ResourceStatusError, snapshot [{snapshot_id}] is [{snapshot.status}], not available",
            )
        return snapshot

    def all(self) -> list[SimSnapshot]:
        return list(self._snapshots.values())

    def describe(
        self, *, snapshot_ids: list[str], statuses: list[str], search_word: str, resource_id: str
    ) -> list[SimSnapshot]:
        """Matching snapshots, newest first (deleted ones only when asked for by status)."""
        found = newest_matching(
            self._snapshots.values(),
            ids=snapshot_ids,
            statuses=statuses,
            word=search_word,
            fields=lambda s: (s.snapshot_id, s.name, s.status),
        )
        return [s for s in found if not resource_id or s.volume_id == resource_id]

    def ledger(self) -> list[dict[str, Any]]:
        return [s.ledger_entry() for s in self._snapshots.values()]
