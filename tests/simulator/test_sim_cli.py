"""``pitrix-sim`` as its own process: ready line, a VM booted through it, clean exit on signals."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

from pitrix.cli.credentials import read_credentials_file
from pitrix.providers.aws.provider import AwsProvider
from pitrix.providers.base import InstanceSpec
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.processes import vm_pids
from simulator.testing import Beacon, daemon_userdata, pid_alive, random_network

PITRIX_SIM = str(Path(sys.executable).parent / "pitrix-sim")


async def start_sim(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    stderr = (tmp_path / "sim.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PITRIX_SIM,
        "--state-dir",
        str(tmp_path / "state"),
        "--network",
        random_network(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    return proc, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_ready_line_vm_and_clean_exit(tmp_path: Path, sig: signal.Signals) -> None:
    beacon = await Beacon().start()
    proc, ready = await start_sim(tmp_path)
    try:
        assert ready["ready"] is True and ready["zone"] == "sim1"
        assert str(ready["url"]).startswith("http://127.0.0.1:") and ready["endpoint"] == ready["url"]
        assert ready["access_key_id"] and ready["secret_access_key"]
        provider = QingCloudProvider.from_runtime(ready)
        try:
            [created] = await provider.run_instances(
                [InstanceSpec(name="cli-1", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))]
            )
            await provider.wait_running([created.instance_id], timeout=10)
            iid, pid, _, _ = (await beacon.next()).split()
            assert iid == created.instance_id and pid_alive(int(pid))
        finally:
            await provider.close()
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await beacon.stop()
    assert not pid_alive(int(pid))
    assert vm_pids({iid}) == {}
    assert list((tmp_path / "state" / "vms").iterdir()) == []
    log = (tmp_path / "sim.log").read_text()
    assert "simulator.stopped" in log and "Traceback" not in log


async def test_given_credentials_are_used(tmp_path: Path) -> None:
    proc, ready = await start_sim(tmp_path, "--access-key-id", "MYKEY", "--secret-access-key", "MYSECRET")
    try:
        assert ready["access_key_id"] == "MYKEY" and ready["secret_access_key"] == "MYSECRET"
        provider = QingCloudProvider.from_runtime(ready)
        try:
            assert await provider.describe_instances() == []
        finally:
            await provider.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def run_failing(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        PITRIX_SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert out == b""  # no ready line
    return proc.returncode or 0, err.decode()


async def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    code, err = await run_failing("--state-dir", state, "--network", "10.0.0.0/16")
    assert code != 0 and "network" in err and "Traceback" not in err
    code, err = await run_failing("--state-dir", state, "--host", "0.0.0.0")
    assert code != 0 and "host" in err and "Traceback" not in err
    code, err = await run_failing("--state-dir", state, "--access-key-id", "K")
    assert code != 0 and "--secret-access-key" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await run_failing(
            "--state-dir", state, "--network", random_network(), "--port", str(port)
        )
    assert code != 0 and f"127.0.0.1:{port}" in err and "Traceback" not in err
    code, err = await run_failing("--state-dir", state, "--ssh-port", "0")
    assert code != 0 and "ssh_port" in err and "Traceback" not in err
    code, err = await run_failing("--state-dir", state, "--vxnet", "net 1")
    assert code != 0 and "vxnet_id" in err and "Traceback" not in err


async def test_light_mode_and_ssh_port_from_the_command_line(tmp_path: Path) -> None:
    proc, ready = await start_sim(
        tmp_path, "--light", "--ssh-port", "2322", "--fault-seed", "5", "--vxnet", "vxnet-cli"
    )
    try:
        assert ready["light"] is True
        provider = QingCloudProvider.from_runtime({**ready, "network": "vxnet-cli"})
        try:
            await provider.check_network()  # the vxnet given on the command line exists
            [created] = await provider.run_instances([InstanceSpec(name="l-1", image="pitrix-metadata")])
            [running] = await provider.wait_running([created.instance_id], timeout=10)
            assert running.ssh_port == 2322 and vm_pids({created.instance_id}) == {}
            assert running.raw["vxnets"][0]["vxnet_id"] == "vxnet-cli"
        finally:
            await provider.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_credentials_from_the_environment_and_into_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No secret on either command line: the key pair comes from the environment, and the file
    the simulator writes is what ``pitrix runtimes add --credentials-file`` reads."""
    monkeypatch.setenv("PITRIX_SIM_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("PITRIX_SIM_SECRET_ACCESS_KEY", "env-secret")
    out = tmp_path / "sim.toml"
    aws_out = tmp_path / "aws.toml"
    proc, ready = await start_sim(
        tmp_path, "--credentials-file", str(out), "--aws-credentials-file", str(aws_out)
    )
    try:
        assert ready["access_key_id"] == "ENVKEY" and ready["secret_access_key"] == "env-secret"
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        runtime = read_credentials_file(str(out))
        assert runtime == {
            "endpoint": ready["url"],
            "zone": "sim1",
            "access_key_id": "ENVKEY",
            "secret_access_key": "env-secret",
            "hypervisor": "simulator",
        }
        provider = QingCloudProvider.from_runtime(runtime)
        try:
            assert await provider.describe_instances() == []
        finally:
            await provider.close()
        # The EC2 face's runtime (provider aws), in a file of its own: the same key pair, SigV4.
        assert stat.S_IMODE(aws_out.stat().st_mode) == 0o600
        aws = read_credentials_file(str(aws_out))
        assert aws["endpoint"] == ready["ec2_endpoint"] == ready["url"] + "/ec2/"
        assert (aws["region"], aws["access_key_id"], aws["ssh_port"]) == ("sim1", "ENVKEY", 2222)
        ec2 = AwsProvider.from_runtime(aws)
        try:
            assert await ec2.describe_instances() == []
        finally:
            await ec2.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert "warning" not in (tmp_path / "sim.log").read_text()
