"""confd golden cases: the real pitrix-agent console script renders what the real confd rendered.

Exactly as /work/shared/confd-golden/README.md says: copy the confdir, point every resource's dest
at an output folder, run ``pitrix-agent -onetime -backend file -file data.yaml -confdir confdir
-config-file /dev/null`` and compare bytes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from agent_helpers import AGENT_BIN

GOLDEN = Path("/work/shared/confd-golden")
CASES = sorted(p.stem for p in (GOLDEN / "expect").glob("*.out"))


def run_agent(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PITRIX_VM_ROOT", "PITRIX_VM_IP")}
    return subprocess.run(
        [
            str(AGENT_BIN),
            "-onetime",
            "-backend",
            "file",
            "-file",
            "data.yaml",
            "-confdir",
            "confdir",
            "-config-file",
            "/dev/null",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def golden_dir(tmp_path: Path) -> Path:
    shutil.copytree(GOLDEN / "confdir", tmp_path / "confdir")
    shutil.copy(GOLDEN / "data.yaml", tmp_path / "data.yaml")
    out = tmp_path / "out"
    out.mkdir()
    for toml in (tmp_path / "confdir/conf.d").glob("*.toml"):
        toml.write_text(toml.read_text().replace("@OUT@", str(out)))
    return tmp_path


def test_golden_cases_render_byte_for_byte(golden_dir: Path) -> None:
    assert len(CASES) == 5
    result = run_agent(golden_dir)
    assert result.returncode == 0, result.stderr
    for case in CASES:
        got = (golden_dir / "out" / f"{case}.out").read_bytes()
        assert got == (GOLDEN / "expect" / f"{case}.out").read_bytes(), case


def test_missing_key_exits_1_with_dest_untouched(golden_dir: Path) -> None:
    data = golden_dir / "data.yaml"
    data.write_text(data.read_text().replace('  timeout: "30"\n', ""))  # p1 needs /env/timeout
    dest = golden_dir / "out/p1-upstreams.out"
    dest.write_text("previous\n")
    result = run_agent(golden_dir)
    assert result.returncode == 1
    assert dest.read_text() == "previous\n"
    assert "p1-upstreams" in result.stderr
    # The other resources were still applied, as confd does.
    assert (golden_dir / "out/p3-cmd.out").read_bytes() == (GOLDEN / "expect/p3-cmd.out").read_bytes()


def test_noop_prints_the_change_and_writes_nothing(golden_dir: Path) -> None:
    result = run_agent(golden_dir, "-noop")
    assert result.returncode == 0, result.stderr
    assert list((golden_dir / "out").iterdir()) == []
    assert "+timeout 30s" in result.stdout


def test_usage_and_config_errors_are_one_line(golden_dir: Path) -> None:
    result = run_agent(golden_dir, "-backend", "nosuch")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "pitrix-agent: backend: unknown backend 'nosuch'"
        " (expected one of metad, file, env, etcdv3, redis, zookeeper)"
    )
    version = subprocess.run([str(AGENT_BIN), "-version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("pitrix-agent ")


async def test_golden_cases_through_etcdv3(golden_dir: Path, plain_etcd_url: str) -> None:
    """The same data written to a real etcd under a prefix renders the same bytes."""
    import uuid

    import aetcd
    import yaml

    from pitrix.agent.memkv import MemKV

    prefix = f"/golden-{uuid.uuid4().hex}"
    flat = MemKV.from_tree(yaml.safe_load((GOLDEN / "data.yaml").read_text())).as_dict()
    host, port = plain_etcd_url.removeprefix("http://").split(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    try:
        for key, value in flat.items():
            await client.put(f"{prefix}{key}".encode(), value.encode())
        env = {k: v for k, v in os.environ.items() if k not in ("PITRIX_VM_ROOT", "PITRIX_VM_IP")}
        proc = await asyncio.create_subprocess_exec(
            str(AGENT_BIN),
            "-onetime",
            "-backend",
            "etcdv3",
            "-node",
            plain_etcd_url,
            "-prefix",
            prefix,
            "-confdir",
            "confdir",
            "-config-file",
            "/dev/null",
            cwd=golden_dir,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    finally:
        await client.delete_prefix(prefix.encode())
        await client.close()
    for case in CASES:
        got = (golden_dir / "out" / f"{case}.out").read_bytes()
        assert got == (GOLDEN / "expect" / f"{case}.out").read_bytes(), case
