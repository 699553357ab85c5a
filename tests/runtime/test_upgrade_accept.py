"""upgrade: what a request is judged against (the catalog, the upgrade path, the parameters), the
env the new version gets, the dry run's diff, and the plan's batches. Real etcd for the catalog."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pitrix.runtime.actions import BY_NAME
from pitrix.runtime.actions.base import Desk, InvalidRequest
from pitrix.runtime.actions.upgrade import Upgrade, UpgradeArgs
from pitrix.runtime.catalog import AppCatalog
from pitrix.runtime.params import CLUSTER_SCOPE
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.repository import Repository
from pitrix.runtime.secret_env import env_context
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.context import JobContext
from pitrix.sealing import Sealer, is_sealed
from pitrix.store import Store

V1: dict[str, Any] = {
    "name": "kv",
    "version": "1.0",
    "env": {"region": "north"},
    "roles": [
        {
            "name": "data",
            "count": 5,
            "image": "kv-1",
            "services": {"start": {"cmd": "start"}, "restart": {"cmd": "restart"}},
            "env": {
                "port": {"type": "integer", "default": 7000, "min": 1, "max": 65535},
                "mode": {"type": "string", "default": "fast", "range": ["fast", "safe"]},
                "old-knob": 3,
                "secret": {"type": "password"},
            },
            "templates": [{"name": "conf", "dest": "/etc/kv.conf", "text": 'port={{getv "/env/port"}}\n'}],
        },
        {"name": "proxy", "count": 1, "image": "kv-1", "services": {"start": {"cmd": "start proxy"}}},
    ],
}


def v2(**upgrade: Any) -> dict[str, Any]:
    spec = copy.deepcopy(V1)
    spec["version"] = "1.1"
    data = spec["roles"][0]
    del data["env"]["old-knob"]
    data["env"]["mode"] = {"type": "string", "default": "safe", "range": ["safe", "paranoid"]}
    data["env"]["cache-mb"] = {"type": "integer", "default": 64, "min": 1}
    data["templates"][0]["text"] = 'port={{getv "/env/port"}}\ncache={{getv "/env/cache-mb"}}\n'
    data["services"]["upgrade"] = {"cmd": "migrate"}
    spec["upgrade"] = {"from_versions": ["1.0", "0.9.*"], "canary": 1, "max_in_flight": 2, **upgrade}
    return spec


@pytest.fixture
async def desk(store: Store, sealer: Sealer) -> Desk:
    catalog = AppCatalog(store)
    await catalog.register(V1, "alice")
    await catalog.register(v2(), "alice")
    # another owner's 1.2 (refused: not alice's) and a 1.3 without an upgrade path
    await catalog.register({**v2(), "version": "1.2"}, "bob")
    await catalog.register({**V1, "version": "1.3"}, "alice")
    await catalog.register({**v2(from_versions=["2.*"]), "version": "2.5"}, "alice")
    roles = copy.deepcopy(v2())
    roles["roles"][1]["name"] = "gateway"
    await catalog.register({**roles, "version": "1.4"}, "alice")
    return Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]


def cluster(sealer: Sealer, env: dict[str, dict[str, str]] | None = None) -> Cluster:
    stored = env if env is not None else {"data": {"mode": "fast", "old-knob": "4", "port": "7100"}}
    stored = {s: dict(v) for s, v in stored.items()}
    stored.setdefault("data", {})["secret"] = sealer.seal("hunter2", env_context("cl-1", "data", "secret"))
    return Cluster(
        id="cl-1", name="kv", owner="alice", runtime="r", app=parse_spec(V1), counts={"data": 5, "proxy": 1}
    ).model_copy(update={"env": stored})


async def refused(desk: Desk, c: Cluster, body: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        await BY_NAME["upgrade"].accept(desk, c, body)


async def test_every_refusal_names_its_field(desk: Desk, sealer: Sealer) -> None:
    c = cluster(sealer)
    await refused(desk, c, {}, "^version: required")
    await refused(desk, c, {"version": 11}, "^version: required")
    await refused(desk, c, {"version": "1.1", "nodes": ["x"]}, "^nodes: not a field of upgrade")
    await refused(desk, c, {"version": "1.0"}, "^version: cluster cl-1 is on kv 1.0 already")
    await refused(desk, c, {"version": "9.9"}, "^version: app 'kv' version '9.9' is not registered for alice")
    await refused(desk, c, {"version": "1.2"}, "^version: app 'kv' version '1.2' is not registered")  # bob's
    await refused(desk, c, {"version": "1.3"}, r"^version: kv 1.3 declares no upgrade")
    await refused(desk, c, {"version": "2.5"}, r"^version: kv 2.5 upgrades from 2\.\*, not from 1.0")
    await refused(desk, c, {"version": "1.4"}, "^version: kv 1.4 has roles data, gateway")
    await refused(desk, c, {"version": "1.1", "env": "x"}, "^env: expected an object")
    await refused(
        desk, c, {"version": "1.1", "env": {"data": {"old-knob": 1}}}, "^env.data.old-knob: role data has no"
    )
    await refused(
        desk, c, {"version": "1.1", "env": {"data": {"cache-mb": 0}}}, "^env.data.cache-mb: 0 is below"
    )
    # a kept value the new version refuses ("fast" is not in 1.1's range), unless a new one is given
    await refused(desk, c, {"version": "1.1"}, "^env.data.mode: the current value 'fast' is not one of")
    accepted = await BY_NAME["upgrade"].accept(desk, c, {"version": "1.1", "env": {"data": {"mode": "safe"}}})
    assert isinstance(accepted.args, UpgradeArgs) and accepted.args.version == "1.1"


async def test_the_env_is_migrated_kept_dropped_added_and_passwords_stay_sealed(
    desk: Desk, sealer: Sealer
) -> None:
    c = cluster(sealer, {"data": {"port": "7100", "old-knob": "4"}, CLUSTER_SCOPE: {"region": "south"}})
    accepted = await BY_NAME["upgrade"].accept(
        desk, c, {"version": "1.1", "env": {"data": {"cache-mb": 128}}}
    )
    args = accepted.args
    assert isinstance(args, UpgradeArgs)
    data = args.env["data"]
    assert data["port"] == "7100"  # kept
    assert "old-knob" not in data  # dropped with its parameter
    assert data["cache-mb"] == "128"  # given
    assert "mode" not in data  # never given: the new default (safe) applies, as at create
    assert args.env[CLUSTER_SCOPE] == {"region": "south"}
    assert is_sealed(data["secret"]) and data["secret"] == c.env["data"]["secret"]
    assert args.app.version == "1.1" and args.previous == "1.0"
    stored = args.stored()
    assert "hunter2" not in str(stored)
    assert BY_NAME["upgrade"].commit(c, BY_NAME["upgrade"].decode(stored))["app"].version == "1.1"


async def test_a_required_parameter_without_a_default_must_be_given(store: Store, sealer: Sealer) -> None:
    spec = v2()
    spec["roles"][0]["env"]["cluster-name"] = {"type": "string", "required": True}
    spec["roles"][0]["env"]["mode"] = {"type": "string", "default": "safe"}
    await AppCatalog(store).register(spec, "alice")
    desk = Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]
    c = cluster(sealer)
    await refused(desk, c, {"version": "1.1"}, "^env.data.cluster-name: required by kv 1.1")
    ok = await BY_NAME["upgrade"].accept(desk, c, {"version": "1.1", "env": {"data": {"cluster-name": "x"}}})
    assert ok.args.env["data"]["cluster-name"] == "x"  # type: ignore[attr-defined]


async def test_the_dry_run_shows_params_roles_policy_and_batches(desk: Desk, sealer: Sealer) -> None:
    action = BY_NAME["upgrade"]
    assert isinstance(action, Upgrade)
    c = cluster(sealer, {"data": {"port": "7100", "old-knob": "4"}})
    preview = await action.preview(desk, c, {"version": "1.1"})
    assert (preview["from"], preview["to"], preview["policy"]) == ("1.0", "1.1", "in_place")
    assert preview["params"]["added"] == {"env.data.cache-mb": "64"}
    assert preview["params"]["removed"] == ["env.data.old-knob"]
    assert preview["params"]["changed_defaults"] == {"env.data.mode": {"from": "fast", "to": "safe"}}
    assert preview["roles"] == {
        "data": {
            "templates": {"added": [], "removed": [], "changed": ["conf"]},
            "services": {"added": ["upgrade"], "removed": [], "changed": []},
        }
    }
    # no nodes placed in this cluster: no batches; with nodes, canary 1 then 2 at a time per role
    assert preview["batches"] == []
    from pitrix.runtime.actions.upgrade import diff

    target = parse_spec(v2())
    shown = diff(c, target, {}, {}, ["data-1", "data-2", "data-3", "data-4", "data-5", "proxy-1"])
    assert [(b["role"], b["name"], b["nodes"]) for b in shown["batches"]] == [
        ("data", "canary", ["data-1"]),
        ("data", "batch-2", ["data-2", "data-3"]),
        ("data", "batch-3", ["data-4", "data-5"]),
        ("proxy", "canary", ["proxy-1"]),
    ]
    with pytest.raises(InvalidRequest, match=r"^version: app 'kv' version '7'"):
        await action.preview(desk, c, {"version": "7"})


def test_the_plan_has_a_step_per_batch_per_role_then_the_commit(sealer: Sealer) -> None:
    c = cluster(sealer)
    args = UpgradeArgs(version="1.1", previous="1.0", app=parse_spec(v2()), env={})
    job = Job(id="j-1", cluster_id="cl-1", action="upgrade", args=args.stored())
    ctx = JobContext(
        store=None,  # type: ignore[arg-type]
        cluster=c,
        job=job,
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=sealer,
        keypairs=None,  # type: ignore[arg-type]
        node_ids=["data-1", "data-2", "data-3", "data-4", "data-5", "proxy-1"],
    )
    plan = BY_NAME["upgrade"].plan(ctx, BY_NAME["upgrade"].decode(job.args))
    assert list(plan.describe()) == [
        ["data:canary"],
        ["data:batch-2"],
        ["data:batch-3"],
        ["proxy:canary"],
        ["commit-upgrade"],
    ]


def test_from_versions_take_globs_and_refuse_junk() -> None:
    spec = parse_spec(v2())
    assert spec.upgrade is not None
    assert spec.upgrade.allows("1.0") and spec.upgrade.allows("0.9.3") and not spec.upgrade.allows("0.8")
    from pitrix.runtime.spec import SpecError

    with pytest.raises(SpecError, match=r"upgrade\.from_versions"):
        parse_spec(v2(from_versions=["1.0 ; rm"]))
    with pytest.raises(SpecError, match=r"upgrade\.policy"):
        parse_spec(v2(policy="sideways"))
