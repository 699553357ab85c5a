"""The redis and zookeeper backends against real servers (Debian's redis-server and zookeeper, on
127.0.0.1 and a free port each): confd's key layouts, watches, and pitrix-agent re-rendering a
template when a value changes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_helpers import AgentProcess
from structlog.testing import capture_logs

from pitrix.agent.backends.redis import RedisBackend, parse_node
from pitrix.agent.backends.zookeeper import ZookeeperBackend
from pitrix.agent.errors import BackendError

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
SLF4J_SIMPLE = Path("/usr/share/java/slf4j-simple.jar")  # so the server says when it listens

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="Debian's redis-server is missing (scripts/system-deps.sh)"
)
HAVE_ZOOKEEPER = ZOOKEEPER_JAR.exists() and shutil.which("java") is not None
needs_zookeeper = pytest.mark.skipif(
    not HAVE_ZOOKEEPER, reason="Debian's zookeeper is missing (scripts/system-deps.sh)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    port: int

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"


async def wait_line(proc: asyncio.subprocess.Process, marker: bytes, timeout: float = 60.0) -> None:
    """Read the server's output until ``marker`` (it is listening), failing with its last lines."""
    assert proc.stdout is not None
    seen: list[bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited: {b''.join(seen[-20:]).decode(errors='replace')}")
            seen.append(line)
            if marker in line:
                return


async def drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


@contextlib.asynccontextmanager
async def serving(args: list[str], marker: bytes, port: int, cwd: Path) -> AsyncIterator[Server]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    try:
        await wait_line(proc, marker)
        drainer = asyncio.create_task(drain(proc))  # a full pipe would block the server
        yield Server(proc, port)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    await drainer


@pytest.fixture(scope="module")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    if shutil.which("redis-server") is None:
        pytest.skip("Debian's redis-server is missing (scripts/system-deps.sh)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--notify-keyspace-events", "KA"]
    async with serving(args, b"Ready to accept connections", port, workdir) as server:
        yield server


@pytest.fixture(scope="module")
async def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    if not HAVE_ZOOKEEPER:
        pytest.skip("Debian's zookeeper is missing (scripts/system-deps.sh)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("zookeeper")
    (workdir / "data").mkdir()
    (workdir / "zoo.cfg").write_text(
        f"tickTime=500\ndataDir={workdir / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\nforceSync=no\n"
    )
    classpath = f"{ZOOKEEPER_JAR}:{SLF4J_SIMPLE}"
    args = ["java", "-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", classpath]
    args += ["org.apache.zookeeper.server.ZooKeeperServerMain", str(workdir / "zoo.cfg")]
    async with serving(args, b"binding to port", port, workdir) as server:
        yield server


async def redis_command(server: Server, *command: str) -> None:
    """One command through redis-cli, as an operator would write the value."""
    proc = await asyncio.create_subprocess_exec(
        "redis-cli", "-p", str(server.port), *command, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out


# -- redis ----------------------------------------------------------------------------------------


def test_redis_nodes_as_confd_writes_them(tmp_path: Path) -> None:
    assert parse_node("10.0.0.1:6380") == {"host": "10.0.0.1", "port": 6380, "db": 0}
    assert parse_node("10.0.0.1:6380/3") == {"host": "10.0.0.1", "port": 6380, "db": 3}
    sock = tmp_path / "redis.sock"
    sock.touch()
    assert parse_node(f"{sock}/2") == {"unix_socket_path": str(sock), "db": 2}
    with pytest.raises(BackendError, match="expected host:port"):
        parse_node("10.0.0.1:port")


@needs_redis
async def test_redis_key_layout_as_confd(redis_server: Server) -> None:
    """Strings by path, a hash's fields under its key, ``key/*`` scanned; separator variant too."""
    await redis_command(redis_server, "FLUSHALL")
    await redis_command(redis_server, "SET", "/database/host", "db1")
    await redis_command(redis_server, "SET", "/database/port", "5432")
    await redis_command(redis_server, "SET", "/key", "foobar")
    await redis_command(redis_server, "HSET", "/upstream", "app1", "10.0.1.10:80", "app2", "10.0.1.11:80")
    await redis_command(redis_server, "SET", "app:db:user", "confd")
    backend = RedisBackend([redis_server.node])
    try:
        values = await backend.get_values(["/database", "/key", "/upstream"])
        assert values == {
            "/database/host": "db1",
            "/database/port": "5432",
            "/key": "foobar",
            "/upstream/app1": "10.0.1.10:80",
            "/upstream/app2": "10.0.1.11:80",
        }
    finally:
        await backend.close()
    colon = RedisBackend([f"{redis_server.node}/0"], separator=":")
    try:
        assert await colon.get_values(["/app"]) == {"/app/db/user": "confd"}
        assert await colon.get_values(["/app/db/user"]) == {"/app/db/user": "confd"}
    finally:
        await colon.close()


@needs_redis
async def test_redis_watch_sees_a_write_after_the_read(redis_server: Server) -> None:
    await redis_command(redis_server, "FLUSHALL")
    await redis_command(redis_server, "SET", "/svc/port", "1")
    backend = RedisBackend([redis_server.node])
    try:
        assert await backend.get_values(["/svc"]) == {"/svc/port": "1"}
        read_at = backend.revision
        # Written after the read, before the watch starts: the watch still sees it.
        await redis_command(redis_server, "SET", "/svc/port", "2")
        index = await asyncio.wait_for(backend.watch("/", ["/svc"], read_at), 10)
        assert index > read_at
        assert await backend.get_values(["/svc"]) == {"/svc/port": "2"}
        # A deletion is a change too.
        watch = asyncio.create_task(backend.watch("/svc", ["/svc"], backend.revision))
        await redis_command(redis_server, "DEL", "/svc/port")
        assert await asyncio.wait_for(watch, 10) > backend.revision
        assert await backend.get_values(["/svc"]) == {}
    finally:
        await backend.close()


@needs_redis
async def test_redis_says_when_keyspace_notifications_are_off(redis_server: Server) -> None:
    await redis_command(redis_server, "CONFIG", "SET", "notify-keyspace-events", "")
    backend = RedisBackend([redis_server.node])
    try:
        with capture_logs() as logs:
            await backend.get_values(["/svc"])
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["notify_keyspace_events"] for e in warnings] == [""]
        assert "notify-keyspace-events" in warnings[0]["event"]
    finally:
        await backend.close()
        await redis_command(redis_server, "CONFIG", "SET", "notify-keyspace-events", "KA")
    # Without -watch nothing subscribes, and nothing warns.
    quiet = RedisBackend([redis_server.node], watching=False)
    try:
        with capture_logs() as logs:
            await quiet.get_values(["/svc"])
        assert logs == []
    finally:
        await quiet.close()


async def test_redis_no_node_answers() -> None:
    backend = RedisBackend([f"127.0.0.1:{free_port()}"])
    with pytest.raises(BackendError, match="redis: no node answered"):
        await backend.get_values(["/a"])
    await backend.close()


# -- zookeeper ------------------------------------------------------------------------------------


@needs_zookeeper
async def test_zookeeper_layout_and_watch(zookeeper_server: Server) -> None:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=zookeeper_server.node)
    await asyncio.to_thread(zk.start, 30)
    backend = ZookeeperBackend([zookeeper_server.node])
    try:
        await asyncio.to_thread(zk.create, "/layout/database/host", b"db1", makepath=True)
        await asyncio.to_thread(zk.create, "/layout/database/port", b"5432")
        await asyncio.to_thread(zk.set, "/layout", b"a directory's own data is not a value")
        values = await backend.get_values(["/layout", "/missing"])
        assert values == {"/layout/database/host": "db1", "/layout/database/port": "5432"}
        read_at = backend.revision
        await asyncio.to_thread(zk.set, "/layout/database/port", b"6432")
        index = await asyncio.wait_for(backend.watch("/", ["/layout"], read_at), 10)
        assert index > read_at
        assert (await backend.get_values(["/layout"]))["/layout/database/port"] == "6432"
        # A new child, and a key that did not exist at the read, are changes too.
        read_at = backend.revision
        await asyncio.to_thread(zk.create, "/missing", b"here")
        assert await asyncio.wait_for(backend.watch("/", ["/missing"], read_at), 10) > read_at
        assert await backend.get_values(["/missing"]) == {"/missing": "here"}
    finally:
        await backend.close()
        await asyncio.to_thread(zk.stop)
        await asyncio.to_thread(zk.close)


async def test_zookeeper_no_node_answers() -> None:
    backend = ZookeeperBackend([f"127.0.0.1:{free_port()}"], connect_timeout=1.0)
    with pytest.raises(BackendError, match="zookeeper: cannot connect"):
        await backend.get_values(["/a"])
    await backend.close()


# -- pitrix-agent on each backend -----------------------------------------------------------------


def confdir(tmp_path: Path) -> tuple[Path, Path]:
    """A confd directory rendering /database/host:port, and the destination it writes."""
    root = tmp_path / "vm"
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/confd/templates/db.tmpl").write_text(
        'server {{getv "/database/host"}}:{{getv "/database/port"}}\n'
    )
    (root / "etc/confd/conf.d/db.toml").write_text(
        '[template]\nsrc = "db.tmpl"\ndest = "/etc/db.conf"\nkeys = ["/database"]\n'
    )
    return root, root / "etc/db.conf"


CONFD_LINE = re.compile(r"^\S+ \S+ \S*pitrix-agent\[\d+\]: (DEBUG|INFO|WARNING|ERROR|FATAL) (.*)$")


async def updated(agent: AgentProcess, dest: Path, timeout: float = 20.0) -> list[str]:
    """confd's lines until ``Target config <dest> has been updated``; every line has confd's shape."""
    assert agent.proc.stderr is not None
    lines = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await agent.proc.stderr.readline()
            assert raw, f"agent exited: {lines[-5:]}"
            line = raw.decode().rstrip("\n")
            match = CONFD_LINE.match(line)
            assert match, line
            lines.append(match.group(2))
            if match.group(2) == f"Target config {dest} has been updated":
                return lines


@needs_redis
async def test_agent_on_redis_rerenders_on_watch_with_confd_logs(
    redis_server: Server, tmp_path: Path
) -> None:
    await redis_command(redis_server, "FLUSHALL")
    await redis_command(redis_server, "SET", "/database/host", "db1")
    await redis_command(redis_server, "SET", "/database/port", "5432")
    root, dest = confdir(tmp_path)
    agent = await AgentProcess.start(
        root, "-backend", "redis", "-node", redis_server.node, "-watch", "-log-format", "text"
    )
    try:
        await agent.ready()
        first = await updated(agent, dest)
        assert first[:3] == [
            "Backend set to redis",
            "Starting confd",
            f"Backend source(s) set to {redis_server.node}",
        ]
        assert f"Target config {dest} out of sync" in first
        assert dest.read_text() == "server db1:5432\n"
        await redis_command(redis_server, "SET", "/database/port", "6432")
        await updated(agent, dest)
        assert dest.read_text() == "server db1:6432\n"
    finally:
        await agent.terminate()


@needs_redis
async def test_agent_on_redis_with_a_separator(redis_server: Server, tmp_path: Path) -> None:
    await redis_command(redis_server, "FLUSHALL")
    await redis_command(redis_server, "SET", "database:host", "db2")
    await redis_command(redis_server, "SET", "database:port", "7")
    root, dest = confdir(tmp_path)
    agent = await AgentProcess.start(
        root, "-onetime", "-backend", "redis", "-node", redis_server.node, "-separator", ":"
    )
    assert await agent.proc.wait() == 0, await agent.proc.stderr.read()  # type: ignore[union-attr]
    assert dest.read_text() == "server db2:7\n"


@needs_zookeeper
async def test_agent_on_zookeeper_rerenders_on_watch(zookeeper_server: Server, tmp_path: Path) -> None:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=zookeeper_server.node)
    await asyncio.to_thread(zk.start, 30)
    root, dest = confdir(tmp_path)
    agent = None
    try:
        await asyncio.to_thread(zk.create, "/database/host", b"zk1", makepath=True)
        await asyncio.to_thread(zk.create, "/database/port", b"2181")
        agent = await AgentProcess.start(
            root, "-backend", "zookeeper", "-node", zookeeper_server.node, "-watch", "-log-format", "text"
        )
        await agent.ready()
        await updated(agent, dest)
        assert dest.read_text() == "server zk1:2181\n"
        await asyncio.to_thread(zk.set, "/database/host", b"zk2")
        await updated(agent, dest)
        assert dest.read_text() == "server zk2:2181\n"
    finally:
        if agent is not None:
            await agent.terminate()
        await asyncio.to_thread(zk.stop)
        await asyncio.to_thread(zk.close)
