"""pitrix-metad as a process: embedded etcd, the ready line, serving, and a clean SIGTERM stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from pitrix.metad.client import MetadManagementClient

DEADLINE = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the test would still answer signals; etcd is not our child, so this suffices.
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_cli_embedded_etcd_serves_and_stops_on_signal(tmp_path: Path, net, stop_signal: int) -> None:
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        "--embedded-etcd", "--state-dir", str(state), "--etcd-client-port", "0", "--etcd-peer-port", "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        ready = json.loads(line)
        assert ready["ready"] is True and ready["pid"] == process.pid
        assert ready["instance_url"].startswith(f"http://{net.metad_ip}:")
        assert ready["etcd"][0].startswith(f"https://{net.metad_ip}:")
        etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
        assert _alive(etcd_pid)

        async with MetadManagementClient(ready["manage_url"]) as manage:
            assert (await manage.healthz())["ok"] is True
            await manage.put_data("/clusters/c1/env/web/port", 80)
            # The embedded etcd takes a whole cluster's registration in one transaction.
            hosts = {
                f"i-{n}": {"ip": f"10.0.{n // 250}.{n % 250}", "role": "web", "cpu": 1} for n in range(1000)
            }
            revision = await manage.post_data("/clusters/c1/hosts/web", hosts)
            assert len((await manage.get_data("/clusters/c1/hosts/web")) or {}) == 1000 and revision > 0
            await manage.put_mapping("i-1", {"cluster_id": "c1", "role": "web", "ip": net.ip(1)})
            connector = aiohttp.TCPConnector(local_addr=(net.ip(1), 0))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(
                    ready["instance_url"] + "/self/env/port", headers={"Accept": "application/json"}
                ) as response,
            ):
                assert response.status == 200 and await response.json() == "80"

            # Its etcd dies (a panic, the OOM killer): metad starts it again and serves on.
            os.kill(etcd_pid, signal.SIGKILL)
            assert process.stderr is not None
            seen: list[str] = []
            while not any("etcd.restarted" in line for line in seen):
                line = (await asyncio.wait_for(process.stderr.readline(), DEADLINE)).decode()
                assert line, f"metad's log ended before etcd was restarted: {seen[-5:]}"
                seen.append(line)
            etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
            assert _alive(etcd_pid)
            await manage.put_data("/clusters/c1/env/web/port", 81)
            assert await manage.get_data("/clusters/c1/env/web/port") == "81"

        process.send_signal(stop_signal)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
        assert not _alive(etcd_pid)
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()
        assert "stopping" in logs
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    cases = [
        ["--listen-ip", "nope", "--etcd", "http://127.0.0.1:1"],
        ["--listen-ip", "127.0.0.1"],
        ["--listen-ip", "127.0.0.1", "--embedded-etcd"],
        ["--listen-ip", "127.0.0.1", "--etcd", "http://127.0.0.1:1", "--instance-port", "70000"],
    ]
    for argv in cases:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pitrix.metad.main", *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode == 2, argv
        assert out == b"" and b"Traceback" not in err and b"error:" in err, (argv, err)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tls-cert", "a.crt"], "needs all of --tls-cert, --tls-key and --client-ca"),
        (
            ["--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--legacy-source-ip"],
            "cannot be combined",
        ),
        (["--issuer-cert", "x"], "go together"),
        (["--issuer-cert", "x", "--issuer-key", "y"], "need mutual TLS"),
        (
            ["--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--trusted-proxy", "127.0.0.1"],
            "only to",
        ),
        (["--legacy-source-ip", "--trusted-proxy", "proxy.local"], "is not an IP address"),
        # Issue 23, finding 8: the legacy model never serves the management API where instances
        # reach it unless told so in as many words.
        (["--legacy-source-ip", "--manage-listen-ip", "127.0.0.1"], "answer every instance"),
        (["--legacy-source-ip", "--manage-listen-ip", "0.0.0.0"], "--insecure-open-management-api"),
        (
            ["--tls-cert", "a", "--tls-key", "b", "--client-ca", "c", "--insecure-open-management-api"],
            "only to the legacy model",
        ),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--max-connections", "100", "--max-unidentified", "200"], "--max-unidentified"),
    ],
)
def test_identity_flags_are_checked(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pitrix.metad.main import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--listen-ip", "127.0.0.1", "--etcd", "http://127.0.0.1:2379", *extra])
    assert message in capsys.readouterr().err


def test_identity_modes_parse() -> None:
    from pitrix.metad.main import parse_args

    base = ["--listen-ip", "127.0.0.1", "--etcd", "http://127.0.0.1:2379"]
    tls = parse_args([*base, "--tls-cert", "a", "--tls-key", "b", "--client-ca", "c"])
    assert tls.tls_cert == Path("a") and not tls.implicit_legacy
    legacy = parse_args([*base, "--legacy-source-ip", "--trusted-proxy", "127.0.0.9"])
    assert legacy.legacy_source_ip and legacy.trusted_proxy == ["127.0.0.9"] and not legacy.implicit_legacy
    assert parse_args(base).implicit_legacy
    # Legacy: the management API on loopback unless another address (not the instances') is given.
    assert legacy.manage_listen_ip == "127.0.0.1" and parse_args(base).manage_listen_ip == "127.0.0.1"
    apart = parse_args([*base, "--legacy-source-ip", "--manage-listen-ip", "10.9.9.9"])
    assert apart.manage_listen_ip == "10.9.9.9"
    open_ = parse_args([*base, "--legacy-source-ip", "--insecure-open-management-api"])
    assert open_.manage_listen_ip == "127.0.0.1" == open_.listen_ip
    assert tls.manage_listen_ip is None  # mutual TLS: beside the instance API
    assert tls.limits.max_connections == 24576


async def test_legacy_management_api_is_not_on_the_instances_address(net, metad_etcd_args: list[str]) -> None:
    """Issue 23, finding 8: with --legacy-source-ip --trusted-proxy an instance reached the
    management API (any cluster's data, any mapping). Now it listens on loopback only."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        *metad_etcd_args, "--prefix", f"/legacy-{os.getpid()}-{net.block}",
        "--legacy-source-ip", "--trusted-proxy", net.ip(99),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), DEADLINE))
        assert ready["manage_url"].startswith("http://127.0.0.1:")
        manage_port = int(ready["manage_url"].rsplit(":", 1)[1])
        # From an instance's address, at metad's own address: nobody listens there.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(net.metad_ip, manage_port, local_addr=(net.ip(1), 0))
        async with MetadManagementClient(ready["manage_url"]) as manage:
            assert (await manage.healthz())["ok"] is True
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_refuses_unreadable_tls_files_with_a_clear_error(tmp_path: Path, net) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        "--etcd", "http://127.0.0.1:1",
        "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(tmp_path / "missing.key"),
        "--client-ca", str(tmp_path / "ca.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 1 and out == b""
    assert b"tls_cert/tls_key" in err and b"missing.crt" in err and b"Traceback" not in err


async def test_log_level_warning_hides_info_lines(tmp_path: Path, net) -> None:
    """A refused caller is logged at info: at ``--log-level warning`` it must not show."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0", "--log-level", "warning",
        "--embedded-etcd", "--state-dir", str(tmp_path / "state"),
        "--etcd-client-port", "0", "--etcd-peer-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), DEADLINE))
        connector = aiohttp.TCPConnector(local_addr=(net.ip(3), 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(ready["instance_url"] + "/self") as response,
        ):
            assert response.status == 403  # nobody is mapped to this address
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()
        # Warnings still show (serving without TLS), info lines do not; and stdout carries the
        # ready line only (a logger bound before logging was configured printed there, unfiltered).
        rest = (await process.stdout.read()).decode()
        assert "legacy source-address identity" in logs
        assert "refused" not in logs + rest and "stopping" not in logs
        assert rest == ""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
