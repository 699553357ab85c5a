"""The etcd-cluster package without a cloud: its spec validates, its templates render what the
etcd-node script expects from each /self a node can see, and the script refuses what it must.

The e2e tests (tests/e2e/test_etcd_cluster.py) run the same files in simulator VMs; these catch a
broken template or script in a second, with the exact view that would have broken it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pitrix.agent.confdfuncs import bound_funcs
from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import parse_confd
from pitrix.runtime.spec import AppSpec, load_spec

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "etcd-cluster"
SCRIPT = PACKAGE / "images" / "etcd" / "opt" / "etcd" / "bin" / "etcd-node"


@pytest.fixture(scope="module")
def spec() -> AppSpec:
    return load_spec(PACKAGE / "app.yaml")


def host(iid: str, node_id: str, ip: str) -> dict[str, Any]:
    return {
        "instance_id": iid,
        "node_id": node_id,
        "ip": ip,
        "role": "etcd",
        "env": {"heartbeat-interval": "100"},
    }


HOSTS = {
    "i-1": host("i-1", "etcd-1", "127.100.0.2"),
    "i-2": host("i-2", "etcd-2", "127.100.0.3"),
    "i-3": host("i-3", "etcd-3", "127.100.0.4"),
}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = str(value)
    return out


def render(spec: AppSpec, name: str, view: dict[str, Any]) -> str:
    template = next(t for t in spec.roles[0].templates if t.name == name)
    return parse_confd(template.text, name=name).execute(funcs=bound_funcs(MemKV(flatten(view))))


def parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value.strip('"') for key, value in pairs}


def test_the_spec_declares_what_the_hooks_need(spec: AppSpec) -> None:
    role = spec.role("etcd")
    assert role.count == 3 and role.volume is not None and role.volume.mount_point == "/data"
    assert {"init", "start", "stop", "destroy", "scale_in"} <= set(role.services)
    assert role.services["scale_in"].nodes_to_execute_on == 1
    assert role.health_check is not None and "health" in role.health_check.cmd


def test_a_created_node_bootstraps_with_every_host(spec: AppSpec) -> None:
    view = {"host": HOSTS["i-2"], "hosts": {"etcd": HOSTS}, "cluster": {"cluster_id": "cl-abc"}}
    env = parse_env(render(spec, "etcd-cluster", view))
    assert env["NAME"] == "etcd-2" and env["IP"] == "127.100.0.3" and env["TOKEN"] == "cl-abc"
    assert env["HOSTS"].split() == ["etcd-1=127.100.0.2", "etcd-2=127.100.0.3", "etcd-3=127.100.0.4"]
    assert env["JOINING"] == "no" and env["ADDING"] == "" and env["PUBLISHED_CLUSTER"] == ""


def test_an_added_node_joins_with_the_published_member_list(spec: AppSpec) -> None:
    new = host("i-4", "etcd-4", "127.100.0.5")
    initial = "etcd-1=http://127.100.0.2:2380,etcd-4=http://127.100.0.5:2380"
    view = {
        "host": new,
        "hosts": {"etcd": {**HOSTS, "i-4": new}},
        "adding-hosts": {"etcd": {"i-4": new}},
        "published": {"etcd": {"initial_cluster": initial}},
        "cluster": {"cluster_id": "cl-abc"},
    }
    env = parse_env(render(spec, "etcd-cluster", view))
    assert env["JOINING"] == "yes" and env["ADDING"].split() == ["etcd-4=127.100.0.5"]
    assert env["PUBLISHED_CLUSTER"] == initial
    # A live member sees the same adding-hosts, and is not joining.
    live = parse_env(render(spec, "etcd-cluster", {**view, "host": HOSTS["i-1"]}))
    assert live["JOINING"] == "no" and live["ADDING"] == env["ADDING"]


def test_tuning_follows_the_nodes_own_env(spec: AppSpec) -> None:
    view = {"host": {**HOSTS["i-1"], "env": {"heartbeat-interval": "250", "snapshot-count": "5000"}}}
    env = parse_env(render(spec, "etcd-tuning", view))
    assert env == {"HEARTBEAT_INTERVAL": "250", "ELECTION_TIMEOUT": "1000", "SNAPSHOT_COUNT": "5000"}


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PITRIX_VM_ROOT": str(root)}
    return subprocess.run(
        ["sh", str(SCRIPT), *args], cwd=root, env=env, capture_output=True, text=True, timeout=30
    )


def test_check_tuning_refuses_an_election_timeout_etcd_would_refuse(tmp_path: Path) -> None:
    staged = tmp_path / "staged.env"
    staged.write_text("HEARTBEAT_INTERVAL=300\nELECTION_TIMEOUT=1000\nSNAPSHOT_COUNT=100\n")
    refused = run_script(tmp_path, "check-tuning", str(staged))
    assert refused.returncode == 1 and "at least 5 x heartbeat-interval" in refused.stderr
    staged.write_text("HEARTBEAT_INTERVAL=200\nELECTION_TIMEOUT=1000\nSNAPSHOT_COUNT=100\n")
    assert run_script(tmp_path, "check-tuning", str(staged)).returncode == 0


def test_a_joining_node_without_a_published_list_refuses_to_bootstrap(spec: AppSpec, tmp_path: Path) -> None:
    """Starting alone would make a second one-member cluster: the script must say why it will not."""
    new = host("i-4", "etcd-4", "127.100.0.5")
    view = {"host": new, "hosts": {"etcd": {**HOSTS, "i-4": new}}, "adding-hosts": {"etcd": {"i-4": new}}}
    (tmp_path / "opt/etcd/etc").mkdir(parents=True)
    (tmp_path / "opt/etcd/etc/cluster.env").write_text(
        render(spec, "etcd-cluster", {**view, "cluster": {"cluster_id": "c"}})
    )
    result = run_script(tmp_path, "start")
    assert result.returncode == 1, result.stdout
    assert "etcd-4 is joining but no initial cluster is published" in result.stderr
    assert not (tmp_path / "var/run/etcd.pid").exists()


def test_commands_before_the_first_render_say_so(tmp_path: Path) -> None:
    result = run_script(tmp_path, "start")
    assert result.returncode == 1 and "cluster.env is missing" in result.stderr
    # A parameter reload on a node whose etcd is not running yet is a no-op, not a failure.
    assert run_script(tmp_path, "reload").returncode == 0
