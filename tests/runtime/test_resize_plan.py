"""resize without VMs: when a batch stops its nodes, and what a role's size is after a resize."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pitrix.runtime.actions.base import InvalidRequest
from pitrix.runtime.actions.resize import judge
from pitrix.runtime.records import Cluster, RoleResources
from pitrix.runtime.resources import role_size
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.resizing import Target, stops_instances


def cluster(online: bool = False, **resources: RoleResources) -> Cluster:
    app = parse_spec(
        {
            "name": "a",
            "roles": [
                {
                    "name": "db",
                    "image": "img",
                    "cpu": 2,
                    "memory": 2048,
                    "volume": {"size": 10},
                    "vertical_scaling": {"online": online, "max_cpu": 8},
                },
                {"name": "web", "image": "img", "instance_type": "c1m1"},
            ],
        }
    )
    return Cluster(id="cl-1", name="c", owner="o", runtime="r", app=app, counts={}, resources=resources)


@dataclass
class Cloud:
    online_resize: bool
    online_volume_growth: bool


@dataclass
class Ctx:  # what stops_instances reads of a JobContext
    provider: Any
    cluster: Cluster


@pytest.mark.parametrize(
    ("instance", "volume", "online_resize", "online_growth", "app_online", "stops"),
    [
        (True, False, False, True, True, True),  # the cloud cannot resize a running instance
        (True, False, True, False, False, True),  # it can, but the app does not allow it
        (True, False, True, False, True, False),  # both: resized online
        (False, True, False, True, False, False),  # only the volume, grown online
        (False, True, False, False, True, True),  # only the volume, on a cloud that needs a stop
        (True, True, True, False, True, True),  # online resize, but the volume needs a stop
    ],
)
def test_a_batch_stops_its_nodes_only_where_something_needs_it(
    instance: bool, volume: bool, online_resize: bool, online_growth: bool, app_online: bool, stops: bool
) -> None:
    target = Target(
        cpu=4, memory=4096, instance_type="", volume_size=20, instance_changes=instance, volume_grows=volume
    )
    ctx = Ctx(Cloud(online_resize, online_growth), cluster(online=app_online))
    assert stops_instances(ctx, "db", target) is stops  # type: ignore[arg-type]


def test_a_role_takes_its_recorded_size_over_the_spec() -> None:
    plain = cluster()
    assert (role_size(plain, "db").cpu, role_size(plain, "db").volume_size) == (2, 10)
    assert role_size(plain, "web").volume_size is None
    resized = cluster(db=RoleResources(cpu=4, memory=4096, instance_type="", volume_size=30))
    size = role_size(resized, "db")
    assert (size.cpu, size.memory, size.volume_size) == (4, 4096, 30)


def test_judge_refuses_by_field_and_drops_a_type_when_cpu_is_given() -> None:
    c = cluster()
    with pytest.raises(InvalidRequest, match=r"roles.db.cpu: 9 is outside the role's bounds \[1, 8\]"):
        judge(c, "db", {"cpu": 9})
    with pytest.raises(InvalidRequest, match=r"roles\.web\.volume_size: role web has no volume"):
        judge(c, "web", {"volume_size": 20})
    with pytest.raises(InvalidRequest, match=r"roles\.web: its nodes already have that size"):
        judge(c, "web", {"instance_type": "c1m1"})
    typed = judge(c, "web", {"cpu": 1})  # the same cpu, but sized by cpu/memory from now on
    assert (typed.instance_type, typed.instance_changes, typed.volume_grows) == ("", True, False)
    grown = judge(c, "db", {"volume_size": 10, "memory": 4096})
    assert (grown.memory, grown.volume_size, grown.volume_grows) == (4096, 10, False)
