"""The env, file and etcdv3 backends, against real files, a real environment and a real etcd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aetcd
import pytest

from pitrix.agent.backends import minimal_keys, select
from pitrix.agent.backends.env import EnvBackend
from pitrix.agent.backends.etcdv3 import EtcdBackend
from pitrix.agent.backends.file import FileBackend
from pitrix.agent.backends.flatten import flatten
from pitrix.agent.errors import BackendError

GOLDEN_DATA = Path("/work/shared/confd-golden/data.yaml")


def test_flatten_like_confd() -> None:
    tree = {"a": {"b": 1, "c": True, "d": 1.5, "e": None, "f": ["x", {"g": 2}], "h": 3.0, "i": 1e21}}
    assert flatten(tree) == {
        "/a/b": "1",
        "/a/c": "true",
        "/a/d": "1.5",
        "/a/f/0": "x",
        "/a/f/1/g": "2",
        "/a/h": "3",
        "/a/i": "1000000000000000000000",
    }


def test_key_selection_is_string_prefix_as_confd() -> None:
    values = {"/host/ip": "1", "/hosts/web/a": "2", "/cluster/id": "3"}
    assert select(values, ["/host"]) == {"/host/ip": "1", "/hosts/web/a": "2"}
    # Fetching is path-wise: /host's subtree does not hold /hosts (the demo's lb needs both).
    assert minimal_keys(["/hosts/web", "/hosts", "/cluster", "/host"]) == ["/cluster", "/host", "/hosts"]
    assert minimal_keys(["/self/cmd", "/self", "/self/host/"]) == ["/self"]


async def test_env_backend_maps_names() -> None:
    backend = EnvBackend({"DATABASE_HOST": "db", "DATABASE_PORT": "5432", "OTHER": "x"})
    assert await backend.get_values(["/database"]) == {"/database/host": "db", "/database/port": "5432"}
    watcher = asyncio.create_task(backend.watch("/", ["/database"], 0))
    await backend.close()
    assert await asyncio.wait_for(watcher, 5) == 0


async def test_file_backend_reads_golden_data() -> None:
    backend = FileBackend([GOLDEN_DATA])
    values = await backend.get_values(["/hosts/web", "/env/mode"])
    assert values["/hosts/web/i-w2/ip"] == "127.100.0.12"
    assert values["/hosts/web/i-w1/weight"] == "3"
    assert values["/env/mode"] == "roundrobin"
    assert "/env/timeout" not in values and "/cluster/cluster_id" not in values


async def test_file_backend_later_files_override(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a:\n  x: 1\n  y: 2\n")
    (tmp_path / "b.yaml").write_text("a:\n  y: 3\n")
    backend = FileBackend([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert await backend.get_values(["/a"]) == {"/a/x": "1", "/a/y": "3"}


@pytest.mark.parametrize(("text", "match"), [("a: [\n", "invalid YAML"), ("- 1\n", "top level must be")])
async def test_file_backend_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(BackendError, match=match):
        await FileBackend([tmp_path / "a.yaml"]).get_values(["/"])
    with pytest.raises(BackendError, match="No such file"):
        await FileBackend([tmp_path / "missing.yaml"]).get_values(["/"])


async def test_file_backend_watch_sees_a_write_after_the_read(tmp_path: Path) -> None:
    data = tmp_path / "a.yaml"
    data.write_text("a: 1\n")
    backend = FileBackend([data], poll_interval=0.02)
    await backend.get_values(["/a"])
    data.write_text("a: 22\n")  # lands between the read and the watch: must not be missed
    assert await asyncio.wait_for(backend.watch("/", ["/a"], 5), 10) == 6
    assert await backend.get_values(["/a"]) == {"/a": "22"}
    watcher = asyncio.create_task(backend.watch("/", ["/a"], 6))
    await backend.close()
    assert await asyncio.wait_for(watcher, 5) == 6


async def test_etcdv3_backend_get_and_watch(plain_etcd_url: str) -> None:
    base = f"/agent-test-{uuid.uuid4().hex}"
    host, port = plain_etcd_url.removeprefix("http://").split(":")
    writer = aetcd.Client(host=host, port=int(port))
    await writer.connect()
    backend = EtcdBackend(["http://127.0.0.1:1", plain_etcd_url])  # the first node is down: fails over
    try:
        await writer.put(f"{base}/hosts/a/ip".encode(), b"10.0.0.1")
        await writer.put(f"{base}/other".encode(), b"x")
        values = await backend.get_values([f"{base}/hosts"])
        assert values == {f"{base}/hosts/a/ip": "10.0.0.1"}
        start = backend.revision
        assert start > 0
        watcher = asyncio.create_task(backend.watch(base, [f"{base}/hosts"], start))
        await writer.put(f"{base}/other".encode(), b"y")  # outside the keys: ignored
        await writer.put(f"{base}/hosts/b/ip".encode(), b"10.0.0.2")
        index = await asyncio.wait_for(watcher, 10)
        assert index > start
        assert (await backend.get_values([f"{base}/hosts"]))[f"{base}/hosts/b/ip"] == "10.0.0.2"
        # A change made while nobody watched is replayed from the given index.
        await writer.put(f"{base}/hosts/c/ip".encode(), b"10.0.0.3")
        assert await asyncio.wait_for(backend.watch(base, [f"{base}/hosts"], index), 10) > index
    finally:
        await backend.close()
        await writer.delete_prefix(base.encode())
        await writer.close()


async def test_etcdv3_backend_no_node_answers() -> None:
    backend = EtcdBackend(["http://127.0.0.1:1"])
    with pytest.raises(BackendError, match="no node answered"):
        await backend.get_values(["/x"])


def test_agent_imports_stay_small(tmp_path: Path) -> None:
    """A file-backend run loads neither aetcd/gRPC nor aiohttp nor any cloud SDK."""
    (tmp_path / "d.yaml").write_text("a: 1\n")
    (tmp_path / "conf.d").mkdir()
    code = (
        "import sys; from pitrix.agent.main import main; "
        f"rc = main(['-onetime', '-backend', 'file', '-file', {str(tmp_path / 'd.yaml')!r}, "
        f"'-confdir', {str(tmp_path)!r}, '-config-file', '/dev/null']); "
        "bad = [m for m in ('aetcd', 'grpc', 'aiohttp', 'boto3', 'aioboto3', 'openstack', 'pitrix.store',"
        " 'pitrix.runtime', 'pitrix.providers') if m in sys.modules]; print(rc, bad)"
    )
    env = dict(os.environ, PITRIX_VM_ROOT="/")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "0 []", out.stderr


async def test_etcdv3_watch_from_a_compacted_revision_reports_a_change(plain_etcd_url: str) -> None:
    base = f"/agent-compact-{uuid.uuid4().hex}"
    host, port = plain_etcd_url.removeprefix("http://").split(":")
    writer = aetcd.Client(host=host, port=int(port))
    await writer.connect()
    backend = EtcdBackend([plain_etcd_url])
    try:
        await writer.put(f"{base}/a".encode(), b"1")
        await backend.get_values([base])
        old = backend.revision
        await writer.put(f"{base}/a".encode(), b"2")
        latest = (await writer.put(f"{base}/b".encode(), b"3")).header.revision
        await writer.compact(latest)
        index = await asyncio.wait_for(backend.watch(base, [base], old), 10)
        assert index > old
        assert await backend.get_values([base]) == {f"{base}/a": "2", f"{base}/b": "3"}
    finally:
        await backend.close()
        await writer.delete_prefix(base.encode())
        await writer.close()


def test_metad_snapshot_subtrees() -> None:
    from pitrix.agent.backends.metad import _subtree

    body = {"host": {"ip": "1"}, "hosts": {"web": {"a": {"ip": "2"}}}, "list": ["x", {"k": "y"}]}
    assert _subtree(body, "/self", "/self/hosts/web") == {"a": {"ip": "2"}}
    assert _subtree(body, "/self", "/self") is body
    assert _subtree(body, "/self", "/self/list/1/k") == "y"
    assert _subtree(body, "/self", "/self/list/7") is None
    assert _subtree(body, "/self", "/self/nope/x") is None
    assert _subtree(body, "/", "/host/ip") == "1"
