"""pitrix-metad as one member of a metadata cluster of several: its embedded etcd joins the others
over mutual TLS (``--etcd-peer``, peer certificates from one CA), so what one metad is told the
others serve. Debian's etcd 3.4 (a multi-member cluster on the wheel's 3.5.1 can lose writes)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.metad.client import MetadManagementClient
from pitrix.store.embedded import BINARY_VARIABLE

from .conftest import Net

SYSTEM_ETCD = Path("/usr/bin/etcd")
DEADLINE = 60.0


def _port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _base(ip: str = "127.0.0.1") -> list[str]:
    return ["--listen-ip", ip, "--embedded-etcd", "--state-dir", "s", "--etcd-peer-port", "2380"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--etcd-member", "m0"], "go with --etcd-peer"),
        (["--etcd-peer", "m0=https://127.0.0.1:2380"], "give --etcd-peer-ca"),
        (["--etcd-peer", "m0=http://127.0.0.1:2380", "--etcd-member", "m0"], "NAME=https://ip:port"),
        (["--etcd-peer", "m0=https://127.0.0.1:2380", "--etcd-peer", "m0=https://127.0.0.2:2380"], "twice"),
        (["--etcd-peer", "m0=https://127.0.0.1:2380", "--etcd-member", "m1"], "must name this member"),
        (["--etcd-peer", "m0=https://127.0.0.1:2381", "--etcd-member", "m0"], "peer URL is"),
    ],
)
def test_member_flags_are_checked(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pitrix.metad.main import parse_args

    tls = ["--etcd-peer-ca", "ca", "--etcd-peer-cert", "c", "--etcd-peer-key", "k"]
    if "give --etcd-peer-ca" in message or "go with" in message:
        tls = []
    with pytest.raises(SystemExit):
        parse_args([*_base(), *extra, *tls])
    assert message in capsys.readouterr().err


def test_member_flags_describe_the_members() -> None:
    from pitrix.metad.main import parse_args

    tls = ["--etcd-peer-ca", "ca", "--etcd-peer-cert", "c", "--etcd-peer-key", "k"]
    peers = ["--etcd-peer", "m0=https://127.0.0.1:2380", "--etcd-peer", "m1=https://127.0.0.2:2380"]
    args = parse_args([*_base(), *peers, *tls, "--etcd-member", "m0", "--etcd-cluster-state", "existing"])
    assert args.etcd_peers.initial_cluster() == "m0=https://127.0.0.1:2380,m1=https://127.0.0.2:2380"
    assert args.etcd_peers.state == "existing" and args.etcd_peers.tls.cert_file == Path("c")
    assert parse_args(_base()).etcd_peers is None


async def test_three_metads_serve_one_metadata_cluster(net: Net, tmp_path: Path) -> None:
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    ips = [net.ip(200 + n) for n in range(3)]
    names = [f"m{n}" for n in range(3)]
    ca = pki.CertificateAuthority.create("metadata peers CA")
    (tmp_path / "peer-ca.pem").write_bytes(ca.cert_pem)
    peer_ports = [_port(ip) for ip in ips]
    peers = [f"--etcd-peer={n}=https://{ip}:{p}" for n, ip, p in zip(names, ips, peer_ports, strict=True)]
    env = {**os.environ, BINARY_VARIABLE: str(SYSTEM_ETCD)}
    processes: list[asyncio.subprocess.Process] = []
    try:
        for name, ip, peer_port in zip(names, ips, peer_ports, strict=True):
            # etcd checks a peer's certificate against the address it connects from, and on
            # loopback that is 127.0.0.1 whatever address the member listens on.
            ca.issue_server([ip, "127.0.0.1"], "etcd-" + name, client_auth=True).write(
                tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
            )
            with (tmp_path / f"{name}.log").open("ab") as err:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "pitrix.metad.main",
                        "--listen-ip", ip, "--instance-port", "0", "--manage-port", "0",
                        "--legacy-source-ip", "--insecure-open-management-api",
                        "--embedded-etcd", "--state-dir", str(tmp_path / name),
                        "--etcd-client-port", "0", "--etcd-peer-port", str(peer_port),
                        "--etcd-member", name, *peers, "--etcd-cluster-token", "test-members",
                        "--etcd-start-timeout", str(DEADLINE),
                        "--etcd-peer-ca", str(tmp_path / "peer-ca.pem"),
                        "--etcd-peer-cert", str(tmp_path / f"{name}.crt"),
                        "--etcd-peer-key", str(tmp_path / f"{name}.key"),
                        stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
                    )
                )  # fmt: skip

        async def ready(process: asyncio.subprocess.Process) -> dict[str, str]:
            assert process.stdout is not None
            line = await process.stdout.readline()
            assert line, "a metad exited before it served: see its log under the test's tmp_path"
            answer: dict[str, str] = json.loads(line)
            return answer

        urls = await asyncio.wait_for(asyncio.gather(*(ready(p) for p in processes)), DEADLINE)
        async with MetadManagementClient(urls[0]["manage_url"]) as manage:
            await manage.put_data("/clusters/c1/env/web/port", "8080")
        async with MetadManagementClient(urls[2]["manage_url"]) as manage:
            assert await manage.get_data("/clusters/c1/env/web/port") == "8080"
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()


async def test_a_member_waiting_for_its_peers_stops_on_sigterm(net: Net, tmp_path: Path) -> None:
    """Its peers' VMs may never come: SIGTERM ends the wait for a quorum and the etcd with it."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    ip = net.ip(210)
    ca = pki.CertificateAuthority.create("metadata peers CA")
    (tmp_path / "peer-ca.pem").write_bytes(ca.cert_pem)
    ca.issue_server([ip, "127.0.0.1"], "etcd-m0", client_auth=True).write(
        tmp_path / "m.crt", tmp_path / "m.key"
    )
    port = _port(ip)
    state = tmp_path / "m0"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", ip, "--instance-port", "0", "--manage-port", "0",
        "--legacy-source-ip", "--insecure-open-management-api",
        "--embedded-etcd", "--state-dir", str(state),
        "--etcd-client-port", "0", "--etcd-peer-port", str(port), "--etcd-member", "m0",
        f"--etcd-peer=m0=https://{ip}:{port}", f"--etcd-peer=m1=https://{net.ip(211)}:{port}",
        f"--etcd-peer=m2=https://{net.ip(212)}:{port}",
        "--etcd-peer-ca", str(tmp_path / "peer-ca.pem"), "--etcd-peer-cert", str(tmp_path / "m.crt"),
        "--etcd-peer-key", str(tmp_path / "m.key"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, BINARY_VARIABLE: str(SYSTEM_ETCD)},
    )  # fmt: skip
    try:
        backoff = Backoff(0.02, 0.5)
        async with asyncio.timeout(DEADLINE):
            # The member's etcd was started and waits for a quorum it will not get.
            while not (state / "etcd.pid.json").exists():
                assert process.returncode is None, "metad exited before it started its etcd"
                await asyncio.sleep(backoff.next())
        etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
        process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode == 0 and out == b""
        with pytest.raises(ProcessLookupError):
            os.kill(etcd_pid, 0)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
