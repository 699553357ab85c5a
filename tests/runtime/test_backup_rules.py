"""The rules of backups that need no VM: the spec's checks, which nodes a backup takes (over a real
etcd), which snapshot each restored node starts from, the schedule's due time and retention."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pitrix.runtime.actions import BY_VERB
from pitrix.runtime.actions.backup import BackupArgs
from pitrix.runtime.actions.base import Desk
from pitrix.runtime.backup_service import beyond_keep, due_at
from pitrix.runtime.backups import BackupPolicy, BackupRecord, BackupSnapshot
from pitrix.runtime.keys import node_key
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.repository import Repository
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.runtime.steps.restore import Source, sources_of
from pitrix.sealing import Sealer
from pitrix.store import Store

ROLES: list[dict[str, Any]] = [
    {"name": "db", "count": 3, "image": "x", "volume": {"size": 5}},
    {"name": "cache", "count": 2, "image": "x", "volume": {"size": 1}},
    {"name": "web", "count": 1, "image": "x"},
]


def spec(**backup: Any) -> dict[str, Any]:
    return {"name": "app", "roles": ROLES, "backup": backup}


@pytest.mark.parametrize(
    ("backup", "words"),
    [
        ({"roles": ["web"]}, "backup.roles: role 'web' has no volume"),
        ({"roles": ["nope"]}, "backup.roles: no role named 'nope'"),
        ({"nodes": "some"}, "backup.nodes"),
        ({"keep": 0}, "backup.keep"),
        ({"pre": {"cmd": ""}}, "backup.pre.cmd"),
        ({"backup": {"cmd": "x", "params": {"PATH": "/"}}}, "backup.backup.params"),
    ],
)
def test_bad_backup_specs_are_refused_naming_the_field(backup: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        parse_spec(spec(**backup))


def test_backed_up_roles_default_to_those_with_a_volume() -> None:
    assert parse_spec(spec()).backup_roles() == ["db", "cache"]
    assert parse_spec(spec(roles=["cache"])).backup_roles() == ["cache"]
    assert parse_spec({"name": "a", "roles": ROLES}).backup_roles() == []


@pytest.fixture
async def desk(store: Store, sealer: Sealer) -> Desk:
    for role, count in (("db", 3), ("cache", 2), ("web", 1)):
        for index in range(1, count + 1):
            if (role, index) == ("db", 2):
                continue  # scaled in: ids have a gap
            node = Node(
                node_id=f"{role}-{index}",
                role=role,
                index=index,
                name=f"cl-b1-{role}-{index}",
                instance_id=f"i-{role}{index}",
                volume_id=f"vol-{role}{index}" if role != "web" else "",
            )
            await store.put(node_key("cl-b1", node.node_id), node.dump())
    return Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]


def cluster(**backup: Any) -> Cluster:
    return Cluster(
        id="cl-b1",
        name="app",
        owner="o",
        runtime="r",
        app=parse_spec(spec(**backup)),
        counts={"db": 3, "cache": 2, "web": 1},
        state="active",
    )


async def test_a_backup_takes_every_node_of_its_roles_or_the_first_of_each(desk: Desk) -> None:
    accepted = await BY_VERB["backup"].accept(desk, cluster(), {"name": "n"})
    assert isinstance(accepted.args, BackupArgs) and accepted.args.backup_id.startswith("bk-")
    assert accepted.args.nodes == ["db-1", "db-3", "cache-1", "cache-2"]
    first = await BY_VERB["backup"].accept(desk, cluster(nodes="first", roles=["db"]), {})
    assert first.args.nodes == ["db-1"]  # type: ignore[attr-defined]
    other = await BY_VERB["backup"].accept(desk, cluster(), {})
    assert other.args.backup_id != accepted.args.backup_id  # type: ignore[attr-defined]


def record(nodes: str, entries: list[tuple[str, str]]) -> BackupRecord:
    return BackupRecord(
        id="bk-1",
        cluster_id="cl-b1",
        cluster_name="app",
        owner="o",
        runtime="r",
        app=parse_spec(spec()),
        counts={"db": 3},
        nodes=nodes,  # type: ignore[arg-type]
        snapshots=[
            BackupSnapshot(node_id=n, role=n.rsplit("-", 1)[0], volume_id="v", size=1, snapshot_id=s)
            for n, s in entries
        ],
    )


def test_restored_nodes_start_from_the_matching_snapshot() -> None:
    every = record("all", [("db-1", "s1"), ("db-3", "s3"), ("cache-1", "c1"), ("cache-2", "c2")])
    # the i-th new node of a role gets the i-th backed-up node's snapshot (gaps in the old ids close)
    assert sources_of(every, ["db-1", "db-2", "cache-1", "cache-2", "web-1"]) == {
        "db-1": Source("s1", "db-1"),
        "db-2": Source("s3", "db-3"),
        "cache-1": Source("c1", "cache-1"),
        "cache-2": Source("c2", "cache-2"),
    }
    first = record("first", [("db-1", "s1")])
    assert sources_of(first, ["db-1", "db-2", "db-3", "web-1"]) == {
        n: Source("s1", "db-1") for n in ("db-1", "db-2", "db-3")
    }


def backup_at(created: float, scheduled: bool = True, status: str = "complete") -> BackupRecord:
    return record("all", []).model_copy(
        update={"id": f"bk-{created:g}", "created": created, "scheduled": scheduled, "status": status}
    )


def test_the_next_backup_is_due_one_interval_after_the_last_scheduled_one() -> None:
    policy = BackupPolicy(interval_hours=2, keep=2, since=1000.0)
    assert due_at(policy, []) == 1000.0 + 7200  # none yet: from when the policy was set
    # manual backups and scheduled ones from before the policy do not count; a failed one does
    records = [backup_at(500.0), backup_at(3000.0, scheduled=False), backup_at(5000.0, status="failed")]
    assert due_at(policy, records) == 5000.0 + 7200
    assert due_at(policy, [*records, backup_at(6000.0, status="pending")]) == 6000.0 + 7200
    assert time.time() > due_at(BackupPolicy(interval_hours=1, keep=1, since=0.0), [])


def test_retention_deletes_the_oldest_complete_scheduled_backups_beyond_keep() -> None:
    records = [
        backup_at(1.0),
        backup_at(2.0, scheduled=False),
        backup_at(3.0),
        backup_at(4.0, status="failed"),
        backup_at(5.0),
        backup_at(6.0, status="pending"),
    ]
    assert [r.created for r in beyond_keep(1, records)] == [1.0, 3.0]
    assert [r.created for r in beyond_keep(2, records)] == [1.0]
    assert beyond_keep(3, records) == []
