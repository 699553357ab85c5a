"""The metadata keyspace: the keys DESIGN.md lays out, byte for byte, and their parsers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pitrix.metad import keyspace
from pitrix.metad.selfview import Mapping
from pitrix.metad.tree import split_path

ODD_IDS = ["i-1", "cl-3f9a1c0b", "i.a_b:c~d", "ünï", "with space", "%2F", "a+b=c", "-", "x" * 200]


def test_cluster_keys_are_the_documented_layout() -> None:
    assert keyspace.cluster("c") == "/clusters/c"
    assert keyspace.cluster_info("c") == "/clusters/c/cluster"
    assert keyspace.owner("c") == "/clusters/c/cluster/owner"
    assert keyspace.hosts("c") == "/clusters/c/hosts"
    assert keyspace.host("c", "web", "i-1") == "/clusters/c/hosts/web/i-1"
    assert keyspace.env("c", "web") == "/clusters/c/env/web"
    assert keyspace.env_value("c", "web", "port") == "/clusters/c/env/web/port"
    assert keyspace.health("c", "web") == "/clusters/c/health/web"
    assert keyspace.cmd("c", "i-1") == "/clusters/c/cmd/i-1"
    assert keyspace.cmd_id("c", "i-1") == "/clusters/c/cmd/i-1/id"
    assert keyspace.endpoints("c") == "/clusters/c/endpoints"
    assert keyspace.links("c") == "/clusters/c/links"
    assert keyspace.adding_hosts("c") == "/clusters/c/adding-hosts"
    assert keyspace.deleting_hosts("c") == "/clusters/c/deleting-hosts"
    assert keyspace.section("c", keyspace.ADDING_HOSTS) == keyspace.adding_hosts("c")
    assert keyspace.published("c") == "/clusters/c/published"


def test_internal_keys_are_the_documented_layout() -> None:
    assert keyspace.mapping("i-1") == "/_pitrix/mapping/i-1"
    assert keyspace.mapping_field("i-1", "bootstrap_sha256") == "/_pitrix/mapping/i-1/bootstrap_sha256"
    assert keyspace.cluster_status("c") == "/_pitrix/status/c"
    assert keyspace.cluster_status_prefix("c") == "/_pitrix/status/c/"
    assert keyspace.instance_status("c", "i-1") == "/_pitrix/status/c/i-1"
    assert keyspace.instance_status("c", "i-1", "heartbeat") == "/_pitrix/status/c/i-1/heartbeat"
    assert keyspace.command_result("c", "i-1", "j-1-init") == "/_pitrix/status/c/i-1/cmd/j-1-init"
    assert keyspace.instance_status("c", "i-1", "cmd", "x") == keyspace.command_result("c", "i-1", "x")
    assert keyspace.revoked("0a1b") == "/_pitrix/revoked/0a1b"
    assert keyspace.revoked_instance("i-1") == "/_pitrix/revoked-instances/i-1"
    assert keyspace.bootstrap_used("ab" * 32) == "/_pitrix/bootstrap-used/" + "ab" * 32
    assert keyspace.issued("i-1") == "/_pitrix/issued/i-1"
    assert keyspace.revoke_after("0a1b") == "/_pitrix/revoke-after/0a1b"


def test_instance_api_paths() -> None:
    assert keyspace.self_status(keyspace.HEARTBEAT) == "/self/status/heartbeat"
    assert keyspace.self_status(keyspace.APPLIED) == "/self/status/applied"
    assert keyspace.self_status(keyspace.HEALTH) == "/self/status/health"
    assert keyspace.self_status(keyspace.CMD, "j-1") == "/self/status/cmd/j-1"
    assert (keyspace.SELF_CERT, keyspace.SELF_BOOTSTRAP) == ("/self/cert", "/self/bootstrap")


@pytest.mark.parametrize("cid", ODD_IDS)
@pytest.mark.parametrize("iid", ODD_IDS)
def test_status_keys_round_trip(cid: str, iid: str) -> None:
    whole = keyspace.parse_status(keyspace.instance_status(cid, iid))
    assert whole == keyspace.StatusKey(cid, iid, "") and whole.command is None
    beat = keyspace.parse_status(keyspace.instance_status(cid, iid, keyspace.HEARTBEAT))
    assert beat == keyspace.StatusKey(cid, iid, "heartbeat") and beat.command is None
    result = keyspace.parse_status(keyspace.command_result(cid, iid, "j-1-init:web"))
    assert result == keyspace.StatusKey(cid, iid, "cmd/j-1-init:web")
    assert result.command == "j-1-init:web" and result.report == keyspace.command_report("j-1-init:web")
    watched = keyspace.cluster_status_prefix(cid) + iid + "/applied"
    assert keyspace.parse_status(watched) == keyspace.StatusKey(cid, iid, "applied")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/",
        "/_pitrix/status",
        "/_pitrix/status/",
        "/_pitrix/status/c",
        "/_pitrix/status/c/",
        "/_pitrix/status//i/heartbeat",
        "/_pitrix/status/c//heartbeat",
        "/_pitrix/status/c/i/cmd//x",
        "/_pitrix/statusx/c/i/heartbeat",
        "_pitrix/status/c/i/heartbeat",
        "/clusters/c/hosts/web/i-1",
        "/_pitrix/mapping/i-1",
    ],
)
def test_a_key_that_is_no_status_key_parses_to_none(key: str) -> None:
    assert keyspace.parse_status(key) is None


def test_a_report_without_a_command_id_names_no_command() -> None:
    assert keyspace.StatusKey("c", "i", "cmd").command is None
    assert keyspace.StatusKey("c", "i", "cmdx/1").command is None


@pytest.mark.parametrize("iid", ODD_IDS)
def test_mapping_keys_round_trip(iid: str) -> None:
    assert keyspace.mapped_instance(split_path(keyspace.mapping(iid))) == iid
    assert keyspace.mapped_instance(split_path(keyspace.mapping_field(iid, "ip"))) == iid


@pytest.mark.parametrize("key", ["/_pitrix/mapping", "/_pitrix/status/c/i", "/clusters/c/cluster", "/"])
def test_a_key_outside_the_mappings_names_no_instance(key: str) -> None:
    assert keyspace.mapped_instance(split_path(key)) is None


@pytest.mark.parametrize(
    ("key", "decides"),
    [
        (keyspace.mapping("i-1"), True),
        (keyspace.mapping_field("i-1", "ip"), True),
        (keyspace.revoked("0a"), True),
        (keyspace.revoked_instance("i-1"), True),
        (keyspace.owner("c"), True),
        (keyspace.cluster_info("c"), False),  # the owner's parent: a write there names the owner key
        (keyspace.host("c", "web", "i-1"), False),
        (keyspace.instance_status("c", "i-1", "heartbeat"), False),
        (keyspace.issued("i-1"), False),
        (keyspace.revoke_after("0a"), False),
    ],
)
def test_which_writes_decide_identity(key: str, decides: bool) -> None:
    assert keyspace.decides_identity(split_path(key)) is decides


def test_a_mappings_self_sources_are_keyspace_keys() -> None:
    mapping = Mapping(instance_id="i-1", cluster_id="c", role="web", ip="127.100.0.2")
    assert mapping.key == "/_pitrix/mapping/i-1"
    assert mapping.status_key("cmd", "x") == "/_pitrix/status/c/i-1/cmd/x"
    assert mapping.sources == {
        "host": "/clusters/c/hosts/web/i-1",
        "hosts": "/clusters/c/hosts",
        "cluster": "/clusters/c/cluster",
        "env": "/clusters/c/env/web",
        "health": "/clusters/c/health/web",
        "cmd": "/clusters/c/cmd/i-1",
        "adding-hosts": "/clusters/c/adding-hosts",
        "deleting-hosts": "/clusters/c/deleting-hosts",
        "endpoints": "/clusters/c/endpoints",
        "links": "/clusters/c/links",
        "published": "/clusters/c/published",
        "monitor": "/clusters/c/monitor/web",
        "upgrade-audit": "/clusters/c/upgrade-audit",
        "rebuild-audit": "/clusters/c/rebuild-audit",
        "vertical-scaling-roles": "/clusters/c/vertical-scaling-roles",
    }
    # A role-less app's host entry has no role level; its role-scoped sections keep the role.
    flat = Mapping(instance_id="i-1", cluster_id="c", role="web", ip="127.100.0.2", layout="roleless")
    assert flat.sources["host"] == "/clusters/c/hosts/i-1"
    assert flat.sources["env"] == "/clusters/c/env/web"


def test_the_module_imports_only_the_standard_library() -> None:
    """The agent imports it: it must not pull metad's server, aiohttp or anything else in."""
    code = (
        "import sys; before = set(sys.modules); import pitrix.metad.keyspace; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(m for m in new - {'pitrix'} if m not in sys.stdlib_module_names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    code = (
        "import sys, pitrix.metad.keyspace; print(sorted(m for m in sys.modules if m.startswith('pitrix')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['pitrix', 'pitrix.metad', 'pitrix.metad.keyspace']", out.stderr
