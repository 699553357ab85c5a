"""Helpers shared by the agent's tests (imported by module name, as pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pitrix.agent.agent import Agent
from pitrix.agent.config import AgentConfig, Overrides, load_config
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad

AGENT_BIN = Path(sys.executable).with_name("pitrix-agent")


def file_config(root: Path, data: Path, **overrides: object) -> AgentConfig:
    """A file-backend config on ``root`` with the given overrides."""
    ov = Overrides(backend="file", files=[data])
    rest = {}
    for key, value in overrides.items():
        if hasattr(ov, key):
            setattr(ov, key, value)
        else:
            rest[key] = value
    config = load_config(root, None, ov, environ={})
    for key, value in rest.items():
        setattr(config, key, value)
    return config


def port_resource(root: Path, reload_cmd: str | None = None) -> Path:
    """A resource rendering /env/port as ``listen <port>`` (with ``reload_cmd`` if given); its dest."""
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates/port.tmpl").write_text('listen {{getv "/env/port"}}\n')
    reload = f"reload_cmd = {json.dumps(reload_cmd)}\n" if reload_cmd else ""
    (root / "etc/confd/conf.d/port.toml").write_text(
        '[template]\nsrc = "port.tmpl"\ndest = "/etc/port.conf"\nkeys = ["/env"]\n' + reload
    )
    return root / "etc/port.conf"


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    """``agent.run_forever()`` for the body of the block; then stopped and its backend closed."""
    task = asyncio.create_task(agent.run_forever())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
        await agent.close()


async def read_fifo_line(path: Path, timeout: float = 20.0) -> str:
    """Block (in a thread) until a writer puts a line into the FIFO ``path``."""

    def read() -> str:
        with path.open() as fh:
            return fh.readline()

    return await asyncio.wait_for(asyncio.to_thread(read), timeout)


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait for any process (not only a child) to exit, through a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(True)

    loop.add_reader(fd, on_exit)
    try:
        await asyncio.wait_for(exited, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return True


def agent_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PITRIX_VM_ROOT"] = str(root)
    env.pop("PITRIX_VM_IP", None)
    env["PITRIX_LOG_FORMAT"] = "json"
    return env


class RecordingReporter:
    """A Reporter that keeps what it was told; ``fail`` makes the next N command reports fail."""

    def __init__(self) -> None:
        self.heartbeats = 0
        self.applied_reports: list[tuple[int, dict[str, dict[str, object]]]] = []
        self.commands: list[tuple[str, dict[str, object]]] = []
        self.fail_commands = 0
        self.health_reports: list[tuple[bool, str | None]] = []
        self.health_details: list[dict[str, object]] = []
        self.monitor_reports: list[tuple[dict[str, float], str | None]] = []

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def applied(self, revision: int, resources: dict[str, dict[str, object]]) -> None:
        self.applied_reports.append((revision, resources))

    async def command(self, cmd_id: str, record: dict[str, object]) -> None:
        from pitrix.agent.errors import BackendError

        if self.fail_commands > 0:
            self.fail_commands -= 1
            raise BackendError("metad: PUT: no node answered (test)")
        self.commands.append((cmd_id, dict(record)))

    async def health(self, ok: bool, error: str | None, details: dict[str, object] | None = None) -> None:
        self.health_reports.append((ok, error))
        self.health_details.append(dict(details or {}))

    async def monitor(self, values: dict[str, float], error: str | None = None) -> None:
        self.monitor_reports.append((dict(values), error))


class AgentProcess:
    """The real ``pitrix-agent`` console script as a child process, its JSON log read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[dict[str, object]] = []
        self.tail = ""

    @classmethod
    async def start(
        cls, root: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            str(AGENT_BIN),
            "--root",
            str(root),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**agent_env(root), **(env or {})},
            cwd=str(cwd or root),
        )
        return cls(proc)

    async def ready(self, timeout: float = 20.0) -> dict[str, object]:
        import json

        assert self.proc.stdout is not None and self.proc.stderr is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"agent not ready: {(await self.proc.stderr.read())[-3000:]!r}") from None
        if not line:
            await self.proc.wait()
            raise AssertionError(
                f"agent exited before it was ready: {(await self.proc.stderr.read())[-3000:]!r}"
            )
        return dict(json.loads(line))

    async def wait_log(self, event: str, timeout: float = 20.0, **fields: object) -> dict[str, object]:
        """The first log entry (seen from now on, or already read) with ``event`` and ``fields``."""
        import json

        def matches(entry: dict[str, object]) -> bool:
            return entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())

        for entry in self.log:
            if matches(entry):
                return entry
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stderr.readline()
                assert line, f"agent exited before logging {event!r}: {self.log[-5:]}"
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                self.log.append(entry)
                if matches(entry):
                    return dict(entry)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit status; the rest of the log is kept in ``self.tail``."""
        if self.proc.returncode is None:
            self.proc.terminate()
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        assert self.proc.stderr is not None
        self.tail = (await self.proc.stderr.read()).decode(errors="replace")
        return rc


class World:
    """A metad with one cluster ``c1``: instance ``i-1`` (role web) at ``ip``."""

    def __init__(self, metad: Metad, manage: MetadManagementClient, block: int) -> None:
        self.metad = metad
        self.manage = manage
        self.ip = f"127.102.{block}.10"

    async def seed(self) -> None:
        """Cluster ``c1`` with its one web host ``i-1`` at ``ip``, and that instance's mapping."""
        await self.manage.post_data(
            "/clusters/c1",
            {
                "cluster": {"cluster_id": "c1", "app_id": "app-demo"},
                "hosts": {"web": {"i-1": {"instance_id": "i-1", "ip": self.ip, "role": "web"}}},
                "env": {"web": {"port": "80"}},
            },
        )
        await self.manage.put_mapping("i-1", {"cluster_id": "c1", "role": "web", "ip": self.ip})

    async def caught_up(self) -> None:
        """Until metad's mirror holds every write etcd has acknowledged: an agent's status write is
        answered once etcd has it, and the management GET reads the mirror, which its watch feeds."""
        assert await self.metad.mirror.wait_for_revision(await self.metad.store.revision())

    async def status(self, *parts: str) -> Any:
        await self.caught_up()
        raw = await self.manage.get_data("/".join(["/_pitrix/status/c1/i-1", *parts]))
        return json.loads(raw) if isinstance(raw, str) else raw
