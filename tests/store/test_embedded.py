"""The embedded etcd: start, stop, adoption after its parent was SIGKILLed, stale records, failures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from pitrix.store import Store
from pitrix.store.embedded import BINARY_VARIABLE, EmbeddedEtcd, EmbeddedEtcdError, PidRecord

PARENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from pitrix.store import Store
    from pitrix.store.embedded import EmbeddedEtcd

    async def main() -> None:
        etcd = EmbeddedEtcd(Path(sys.argv[1]), unsafe_no_fsync=True)
        url = await etcd.start()
        async with Store([url], tls=etcd.client_tls) as store:
            await store.put("/written-by-parent", b"still here")
        print("READY " + json.dumps({"url": url, "pid": etcd.pid}), flush=True)

    asyncio.run(main())
    sys.stdin.read()  # stay alive until killed
    """
)


def cmdline(pid: int | None) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def alive(pid: int) -> bool:
    """Running and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reaped(pid: int) -> bool:
    """Gone from the process table (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


async def wait_gone(pid: int, within: float = 10.0) -> None:
    """Wait for an unrelated process to exit, via a pidfd (readable on exit)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await asyncio.wait_for(gone.wait(), within)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_start_stop_records_and_cleans_up(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    url = await etcd.start()
    assert url == etcd.client_url and url.startswith("https://127.0.0.1:")
    record = PidRecord.load(tmp_path / "etcd.pid.json")
    assert record is not None
    assert record.pid == etcd.pid and record.client_url == url
    assert record.data_dir == str((tmp_path / "etcd").resolve())
    assert record.marker in cmdline(record.pid)
    assert os.getsid(record.pid) == record.pid  # its own session: a kill of our group does not reach it
    assert (tmp_path / "etcd" / "member").is_dir()
    assert (tmp_path / "etcd.log").exists()
    async with Store([url], tls=etcd.client_tls) as store:
        assert await store.put("/k", b"v") > 0
    pid = etcd.pid
    assert pid is not None
    await etcd.stop()
    assert not alive(pid)
    assert not (tmp_path / "etcd.pid.json").exists()
    with pytest.raises(EmbeddedEtcdError, match="not started"):
        _ = etcd.client_url


async def test_restart_keeps_ports_and_data(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    url = await etcd.start()
    async with Store([url], tls=etcd.client_tls) as store:
        await store.put("/persist", b"yes")
    await etcd.stop()
    again = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    assert await again.start() == url
    assert not again.reused
    async with Store([url], tls=again.client_tls) as store:
        kv = await store.get("/persist")
        assert kv is not None and kv.value == b"yes"
    await again.stop()


async def test_a_supervised_etcd_that_dies_is_started_again_with_its_data(tmp_path: Path) -> None:
    """An etcd panic (3.5.1 has one under load) or the OOM killer must not leave the daemon on a
    dead store: the same URL answers again, with what was written before."""
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    url = await etcd.start()
    etcd.supervise()
    try:
        async with Store([url], tls=etcd.client_tls) as store:
            await store.put("/before", b"kept")
            for round_ in (1, 2):
                dead = etcd.pid
                assert dead is not None
                os.kill(dead, signal.SIGKILL)
                await asyncio.wait_for(etcd.wait_restarts(round_), 60)
                assert etcd.pid not in (None, dead) and alive(etcd.pid)
                assert reaped(dead)  # not left a zombie
                assert etcd.client_url == url
                kv = await store.get("/before")  # the same client, reconnected
                assert kv is not None and kv.value == b"kept"
        record = PidRecord.load(etcd.record_path)
        assert record is not None and record.pid == etcd.pid
    finally:
        await etcd.stop()
    # Stopping ends the supervision: the stop is not taken for a crash.
    assert etcd.pid is None and etcd.restarts == 2


async def test_child_survives_parent_sigkill_and_is_reused(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert parent.stdout is not None

    async def ready() -> dict[str, object]:
        assert parent.stdout is not None
        while line := await parent.stdout.readline():
            if line.startswith(b"READY "):
                return dict(json.loads(line[6:]))
        raise AssertionError("the parent exited before starting etcd")

    started = await asyncio.wait_for(ready(), 30)
    os.killpg(parent.pid, signal.SIGKILL)  # the parent and its whole process group
    await asyncio.wait_for(parent.wait(), 10)
    assert parent.returncode == -signal.SIGKILL
    assert alive(started["pid"])

    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    try:
        assert await etcd.start() == started["url"]
        assert etcd.reused
        assert etcd.pid == started["pid"]
        async with Store([str(started["url"])], tls=etcd.client_tls) as store:
            kv = await store.get("/written-by-parent")
            assert kv is not None and kv.value == b"still here"
    finally:
        await etcd.stop()
    await wait_gone(started["pid"])
    assert not alive(started["pid"])
    assert not (tmp_path / "etcd.pid.json").exists()


async def test_second_instance_in_same_process_reuses_the_first(tmp_path: Path) -> None:
    first = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    second = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    urls = await asyncio.gather(first.start(), second.start())
    try:
        assert urls[0] == urls[1]
        assert first.pid == second.pid
        assert first.reused != second.reused
    finally:
        await first.stop()
    await second.stop()  # already stopped by the first: harmless


async def test_stale_record_of_a_foreign_pid_is_never_signalled(tmp_path: Path) -> None:
    bystander = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
    )
    try:
        data_dir = str((tmp_path / "etcd").resolve())
        PidRecord(
            bystander.pid, "http://127.0.0.1:1", "http://127.0.0.1:2", data_dir, "--data-dir=" + data_dir
        ).save(tmp_path / "etcd.pid.json")
        etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
        url = await etcd.start()
        assert not etcd.reused and etcd.pid != bystander.pid
        assert url != "http://127.0.0.1:1"
        await etcd.stop()
        assert bystander.returncode is None and alive(bystander.pid)
        # stop() with a record naming a foreign pid must not signal it either.
        PidRecord(bystander.pid, url, url, data_dir, "--data-dir=" + data_dir).save(
            tmp_path / "etcd.pid.json"
        )
        await EmbeddedEtcd(tmp_path).stop()
        assert alive(bystander.pid)
        assert not (tmp_path / "etcd.pid.json").exists()
    finally:
        bystander.kill()
        await bystander.wait()


async def test_garbage_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "etcd.pid.json").write_text("{not json")
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    await etcd.start()
    try:
        assert not etcd.reused
    finally:
        await etcd.stop()


async def test_live_but_unhealthy_child_is_replaced(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    url = await etcd.start()
    frozen = etcd.pid
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)  # alive, ours, but answers nothing
    successor = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    try:
        assert await successor.start() == url
        assert not successor.reused and successor.pid != frozen
        assert not alive(frozen)
        async with Store([url], tls=successor.client_tls) as store:
            assert await store.revision() > 0
    finally:
        await successor.stop()
        if alive(frozen):
            os.kill(frozen, signal.SIGKILL)
        await etcd.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_fixed_ports(tmp_path: Path) -> None:
    client, peer = free_port(), free_port()
    etcd = EmbeddedEtcd(tmp_path, host="127.0.0.1", client_port=client, peer_port=peer, unsafe_no_fsync=True)
    try:
        assert await etcd.start() == f"https://127.0.0.1:{client}"
        assert f"--listen-peer-urls=https://127.0.0.1:{peer}" in cmdline(etcd.pid)
    finally:
        await etcd.stop()


async def test_busy_fixed_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        etcd = EmbeddedEtcd(tmp_path, client_port=port)
        with pytest.raises(EmbeddedEtcdError, match=rf"client_port: 127.0.0.1:{port} is already in use"):
            await etcd.start()
    assert not (tmp_path / "etcd.pid.json").exists()


SYSTEM_ETCD = Path("/usr/bin/etcd")  # Debian's etcd-server (3.4), which CI installs


async def test_a_system_etcd_binary_can_stand_in_for_the_wheel_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    etcd = EmbeddedEtcd(tmp_path)
    url = await etcd.start()
    try:
        assert cmdline(etcd.pid)[0] == str(SYSTEM_ETCD)
        assert etcd.client_tls is not None
        connector = aiohttp.TCPConnector(ssl=etcd.client_tls.ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{url}/version") as response,
        ):
            assert (await response.json())["etcdserver"].startswith("3.4.")
        async with Store([url], tls=etcd.client_tls) as store:
            await store.put("/on-3.4", b"yes")
            kv = await store.get("/on-3.4")
            assert kv is not None and kv.value == b"yes"
    finally:
        await etcd.stop()


async def test_a_wrong_etcd_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_VARIABLE, str(tmp_path / "no-such-etcd"))
    refused = f"{BINARY_VARIABLE}: .*no-such-etcd is not an executable file"
    with pytest.raises(EmbeddedEtcdError, match=refused):
        await EmbeddedEtcd(tmp_path / "state").start()


async def test_failed_start_reports_the_log_tail(tmp_path: Path) -> None:
    wal = tmp_path / "etcd" / "member" / "wal"
    wal.mkdir(parents=True)
    (tmp_path / "etcd" / "member" / "snap").mkdir()
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"\xff" * 4096)
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    with pytest.raises(EmbeddedEtcdError, match=r"(?s)exited with status 1 during startup.*wal"):
        await etcd.start()
    assert not (tmp_path / "etcd.pid.json").exists()
    assert etcd.pid is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"client_port": 70000}, "client_port"),
        ({"peer_port": -1}, "peer_port"),
        ({"name": "a=b"}, "name"),
        ({"host": ""}, "host"),
    ],
)
def test_bad_arguments_name_the_field(tmp_path: Path, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(EmbeddedEtcdError, match=rf"^{field}"):
        EmbeddedEtcd(tmp_path, **kwargs)  # type: ignore[arg-type]


async def test_stop_without_start_is_harmless(tmp_path: Path) -> None:
    await EmbeddedEtcd(tmp_path).stop()
    assert not (tmp_path / "etcd.pid.json").exists()


async def test_supervising_an_etcd_not_started_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedEtcdError, match="not started: nothing to supervise"):
        EmbeddedEtcd(tmp_path).supervise()
