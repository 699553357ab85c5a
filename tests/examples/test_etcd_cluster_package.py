"""The etcd-cluster package without a cloud: its spec validates, its templates render what the
etcd-node script expects from each /self a node can see, and the script refuses what it must.

The e2e tests (tests/e2e/test_etcd_cluster.py) run the same files in simulator VMs; these catch a
broken template or script in a second, with the exact view that would have broken it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitrix.agent.confdfuncs import bound_funcs
from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import parse_confd
from pitrix.runtime.spec import AppSpec, load_spec
from simulator.testing import random_network

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


def run_script(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), *args], cwd=root, env=script_env(root, **env), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


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


def test_a_stale_pid_file_never_names_another_process(spec: AppSpec, tmp_path: Path) -> None:
    """After a reboot the recorded pid may be anyone's: stop must not kill it, start must not
    believe etcd is running."""
    (tmp_path / "opt/etcd/etc").mkdir(parents=True)
    view = {"host": HOSTS["i-1"], "hosts": {"etcd": HOSTS}, "cluster": {"cluster_id": "c"}}
    (tmp_path / "opt/etcd/etc/cluster.env").write_text(render(spec, "etcd-cluster", view))
    (tmp_path / "var/run").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "var/run/etcd.pid").write_text(f"{bystander.pid}\n")
        stopped = run_script(tmp_path, "stop")
        assert stopped.returncode == 0 and "not running" in stopped.stdout, stopped
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# -- the hooks against real members: three etcd processes on loopback, started by the script ----


class Member:
    """One node's root as the script sees it: rendered files in, etcd's data and logs out."""

    def __init__(self, spec: AppSpec, root: Path, node: dict[str, Any]) -> None:
        self.spec, self.root, self.node = spec, root, node
        (root / "opt/etcd/etc").mkdir(parents=True)
        (root / "opt/etcd/etc/tuning.env").write_text(render(spec, "etcd-tuning", {"host": node}))

    def render(self, hosts: dict[str, Any], **view: Any) -> None:
        whole = {"host": self.node, "hosts": {"etcd": hosts}, "cluster": {"cluster_id": "cl-test"}, **view}
        (self.root / "opt/etcd/etc/cluster.env").write_text(render(self.spec, "etcd-cluster", whole))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_script(self.root, *args, **env)

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["sh", str(SCRIPT), "start"], cwd=self.root, env=script_env(self.root), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        pidfile = self.root / "var/run/etcd.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def script_env(root: Path, **extra: str) -> dict[str, str]:
    """The VM's environment as the simulator gives it: its Python's directory (etcdctl) first."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {"PATH": path, "PITRIX_VM_ROOT": str(root), **extra}


def status(ip: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{ip}:2379/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        answer: dict[str, Any] = json.load(reply)
    return answer


def member_urls(ip: str) -> set[str]:
    request = urllib.request.Request(f"http://{ip}:2379/v3/cluster/member/list", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return {url for m in json.load(reply)["members"] for url in m["peerURLs"]}


@pytest.fixture
def members(spec: AppSpec, tmp_path: Path) -> Iterator[list[Member]]:
    base = random_network().rsplit(".", 1)[0]
    made = [
        Member(spec, tmp_path / f"n{i}", host(f"i-{i}", f"etcd-{i}", f"{base}.{i + 1}")) for i in range(1, 5)
    ]
    try:
        yield made
    finally:
        for member in made:
            member.kill()


def test_the_hooks_against_real_members(members: list[Member]) -> None:
    """Bootstrap, ordering, an idempotent member add + join, an idempotent member remove, and a
    cluster that cannot be reached is a failure, never taken for "not a member"."""
    first, second, third, new = members
    hosts = {m.node["instance_id"]: m.node for m in (first, second, third)}
    for member in (first, second, third):
        member.render(hosts)
    starting = [m.start() for m in (first, second, third)]
    for process in starting:
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output

    ips = {m.node["node_id"]: m.node["ip"] for m in members}
    order = first.run("ordering").stdout.split()
    leader_id = status(ips["etcd-1"])["leader"]
    leader = next(
        n for n in ("etcd-1", "etcd-2", "etcd-3") if status(ips[n])["header"]["member_id"] == leader_id
    )
    assert sorted(order) == ["etcd-1", "etcd-2", "etcd-3"] and order[-1] == leader
    # The role's monitor: three items out of etcd's own /metrics, as "name value" lines.
    stats = dict(line.split() for line in first.run("metrics").stdout.splitlines())
    assert set(stats) == {"has_leader", "db_size", "proposals_committed"}, stats
    assert float(stats["has_leader"]) == 1 and float(stats["db_size"]) > 0, stats
    assert float(stats["proposals_committed"]) > 0, stats

    grown = {**hosts, "i-4": new.node}
    first.render(grown, **{"adding-hosts": {"etcd": {"i-4": new.node}}})
    added = [first.run("add-members") for _ in range(2)]  # a retried job adds nothing twice
    assert [a.returncode for a in added] == [0, 0], added
    published = [json.loads(a.stdout) for a in added]
    assert published[0] == published[1]
    initial = published[0]["etcd"]["initial_cluster"]
    assert f"etcd-4=http://{ips['etcd-4']}:2380" in initial.split(",") and len(initial.split(",")) == 4
    new.render(grown, **{"adding-hosts": {"etcd": {"i-4": new.node}}}, published=published[0])
    joined = new.run("start")
    assert joined.returncode == 0 and "join: " in joined.stdout, joined
    assert len(member_urls(ips["etcd-1"])) == 4

    first.render(grown, **{"deleting-hosts": {"etcd": {"i-4": new.node}}})
    removed = [first.run("remove-members") for _ in range(2)]
    assert [r.returncode for r in removed] == [0, 0], removed
    assert f"http://{ips['etcd-4']}:2380" not in member_urls(ips["etcd-1"])

    for member in (first, second, third):
        assert member.run("stop").returncode == 0
    down = first.run("metrics")
    assert down.returncode == 1 and "did not answer /metrics" in down.stderr, down
    unreachable = first.run("remove-members", MEMBER_WAIT="2")
    assert unreachable.returncode == 1 and "member remove etcd-4 failed" in unreachable.stderr


# -- start: a launched etcd that has not exec'd yet is starting, one that is gone has exited ------


def children_named(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a child whose command is ``name`` (from /proc, as ps would)."""
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    return True
    return False


def test_start_waits_for_a_launched_etcd_that_has_not_exec_d_yet(spec: AppSpec, tmp_path: Path) -> None:
    """On a loaded host the process ``start`` launches may not have exec'd etcd yet when the script
    first looks at it (its command line is still the script's): that is a start in progress, and
    was once taken for "etcd exited" (a replace upgrade failed on a loaded CI host that way). A
    FIFO as etcd's log holds the launched process there, before its exec, until a reader opens
    it: the script must be found pausing between looks, then report etcd started."""
    base = random_network().rsplit(".", 1)[0]
    member = Member(spec, tmp_path / "n1", host("i-1", "etcd-1", f"{base}.2"))
    member.render({"i-1": member.node})
    log = member.root / "var/log/etcd/etcd.log"
    log.parent.mkdir(parents=True)
    os.mkfifo(log)
    starting = member.start()
    reader: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 30
        while not children_named(starting.pid, "sleep"):  # it looked, and waits to look again
            assert starting.poll() is None, starting.communicate()
            assert time.monotonic() < deadline, "start never paused for the launched etcd"
            time.sleep(0.05)  # a polling pace, under a deadline
        with (tmp_path / "etcd.log").open("wb") as sink:
            reader = subprocess.Popen(["cat", str(log)], stdout=sink)
        output, _ = starting.communicate(timeout=90)
        assert starting.returncode == 0 and "etcd etcd-1 started (bootstrap: " in output, output
    finally:
        starting.kill()
        member.kill()
        if reader is not None:
            reader.wait(timeout=30)


def test_start_reports_an_etcd_that_exits_at_once_with_its_log(spec: AppSpec, tmp_path: Path) -> None:
    """The other side: a launched etcd that is gone (or a zombie) has exited, said at once with
    the end of its log, not after the whole start wait."""
    base = random_network().rsplit(".", 1)[0]
    member = Member(spec, tmp_path / "n1", host("i-1", "etcd-1", f"{base}.2"))
    member.render({"i-1": member.node})
    (member.root / "opt/etcd/etc/tuning.env").write_text("MAX_REQUEST_BYTES=lots\n")  # etcd refuses it
    try:
        result = member.run("start", START_WAIT="600")
    finally:
        member.kill()
    assert result.returncode == 1, result
    # the end of its log (its usage, for the flag it refused), then the verdict
    assert "etcd etcd-1 exited" in result.stderr and "etcd --version" in result.stderr, result.stderr
