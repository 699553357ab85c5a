"""upgrade's steps without VMs: the command that swaps a node's templates, run by a real sh on a
VM-root directory; and which nodes a replace batch takes, from node records in a real etcd."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from test_upgrade_accept import V1, v2

from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import upgrade
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.nodes import save
from pitrix.sealing import Sealer
from pitrix.store import Store


def context(store: Store, app: dict[str, Any]) -> JobContext:
    cluster = Cluster(id="cl-1", name="kv", owner="o", runtime="r", app=parse_spec(app), counts={})
    return JobContext(
        store=store,
        cluster=cluster,
        job=Job(id="j-1", cluster_id="cl-1", action="upgrade", args={}),
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=Sealer.generate(),
        keypairs=None,  # type: ignore[arg-type]
    )


def test_the_templates_command_replaces_the_apps_templates_and_nothing_else(tmp_path: Path) -> None:
    conf, tmpl = tmp_path / "etc/confd/conf.d", tmp_path / "etc/confd/templates"
    conf.mkdir(parents=True)
    tmpl.mkdir(parents=True)
    (conf / "app-gone.toml").write_text("[template]\n")
    (tmpl / "app-gone.tmpl").write_text("old\n")
    (conf / "image-own.toml").write_text("[template]\n")  # the image's: not the app's to remove
    command = upgrade.templates_command(parse_spec(v2()), "data")
    done = subprocess.run(
        ["sh", "-c", command], env={"PITRIX_VM_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in conf.iterdir()) == ["app-conf.toml", "image-own.toml"]
    assert sorted(p.name for p in tmpl.iterdir()) == ["app-conf.tmpl"]
    new_text = parse_spec(v2()).role("data").templates[0].text
    assert (tmpl / "app-conf.tmpl").read_text() == new_text
    assert 'dest = "/etc/kv.conf"' in (conf / "app-conf.toml").read_text()
    # a role without templates: the app's go, none come
    done = subprocess.run(
        ["sh", "-c", upgrade.templates_command(parse_spec(v2()), "proxy")],
        env={"PITRIX_VM_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and sorted(p.name for p in conf.iterdir()) == ["image-own.toml"]


async def test_a_replace_batch_never_takes_a_node_already_rebuilt(store: Store) -> None:
    ctx = context(store, V1)
    target = upgrade.target_context(ctx, parse_spec(v2()), {})
    by_role = {"data": [f"data-{i}" for i in range(1, 6)], "proxy": ["proxy-1"]}
    accepted = {n: f"i-{n}" for ids in by_role.values() for n in ids}
    for ids in by_role.values():
        for node_id in ids:
            role, index = node_id.rsplit("-", 1)
            node = Node(node_id=node_id, role=role, index=int(index), name=f"cl-1-{node_id}")
            await save(ctx, node.model_copy(update={"instance_id": accepted[node_id]}))

    async def rebuild(node_id: str) -> None:
        role, index = node_id.rsplit("-", 1)
        node = Node(node_id=node_id, role=role, index=int(index), name=f"cl-1-{node_id}")
        await save(ctx, node.model_copy(update={"instance_id": f"i-new-{node_id}"}))

    assert await upgrade.rebuilt_batch_of(ctx, target, by_role, "data", 1, accepted) == (["data-1"], [])
    await rebuild("data-1")
    # canary 1, then max_in_flight 2 of those left, whatever their position in the order
    assert await upgrade.rebuilt_batch_of(ctx, target, by_role, "data", 2, accepted) == (
        ["data-2", "data-3"],
        ["data-1"],
    )
    await rebuild("data-3")
    chosen, done = await upgrade.rebuilt_batch_of(ctx, target, by_role, "data", 3, accepted)
    assert (chosen, sorted(done)) == (["data-2", "data-4"], ["data-1", "data-3"])
    # the next role: every node of the roles before it counts as done
    chosen, done = await upgrade.rebuilt_batch_of(ctx, target, by_role, "proxy", 1, accepted)
    assert chosen == ["proxy-1"] and set(done) == set(by_role["data"])


def test_the_target_tells_upgrade_and_rollback_both_versions(store: Store) -> None:
    target = upgrade.target_context(context(store, V1), parse_spec(v2()), {"data": {"port": "1"}})
    service = target.cluster.app.role("data").services["upgrade"]
    assert service.cmd == "export PITRIX_FROM_VERSION=1.0 PITRIX_TO_VERSION=1.1\nmigrate"
    assert target.cluster.app.role("data").services["start"].cmd == "start"
    assert target.cluster.env == {"data": {"port": "1"}} and target.cluster.id == "cl-1"
