"""The README's "Using it" works as written: its shell blocks run literally, on a fresh state dir.

The section's blocks are terminals: every one but the last runs something that stays up (the
simulator, pitrixd) and is started in the background; the last is a session run to its end with
``set -e``, so any command that fails fails the test. Only the environment differs from a
reader's: a fresh state dir, a free port for pitrixd and a network of its own for the simulator
(settings the README names), and ``.venv`` is the venv running this test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from simulator.testing import random_network

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def using_it_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the README's "Using it" section, in order."""
    start = readme.index("\n## Using it\n")
    end = readme.find("\n## ", start + 1)
    return FENCE.findall(readme[start : end if end > 0 else None])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


@asynccontextmanager
async def terminal(block: str, cwd: Path, env: dict[str, str], log: Path) -> AsyncIterator[list[str]]:
    """``block`` running as a terminal would run it, once its server printed its JSON ready line;
    stopped at the end as Ctrl-C stops it. Yields the lines it printed (stderr goes to ``log``)."""
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            "bash", "-e", "-c", block, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    assert process.stdout is not None
    printed: list[str] = []

    async def read(until_ready: bool) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            printed.append(raw.decode())
            if until_ready and '"ready": true' in printed[-1]:
                return
        assert not until_ready, f"{block!r} ended before it was ready:\n{tail(log)}"

    drain: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(read(until_ready=True), 120)
        drain = asyncio.create_task(read(until_ready=False))  # the pipe never fills
        yield printed
        assert process.returncode is None, f"{block!r} ended early:\n{tail(log)}"
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the terminal's process group
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                raise
        if drain is not None:
            await drain


async def test_using_it_runs_as_written(tmp_path: Path) -> None:
    blocks = using_it_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 3, blocks
    servers, session = blocks[:-1], blocks[-1]
    work = tmp_path / "checkout"  # where the reader is: the examples, and the venv as .venv
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    env.update(
        PITRIX_STATE_DIR=str(tmp_path / "state"),
        PITRIX_API__LISTEN=f"127.0.0.1:{port}",
        PITRIX_URL=f"http://127.0.0.1:{port}",
        PITRIX_SIM_NETWORK=random_network(),
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # no cli.toml of this machine's user
    )
    logs = [tmp_path / f"terminal-{n}.log" for n in range(1, len(servers) + 1)]

    async with terminal(servers[0], work, env, logs[0]), terminal(servers[1], work, env, logs[1]):
        process = await asyncio.create_subprocess_exec(
            "bash", "-e", "-x", "-c", session, cwd=work, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 600)
        text = out.decode()
        assert process.returncode == 0, text
    assert "runtime sim saved" in text and "runtime sim deleted" in text, text
    assert "Traceback" not in text
    for log in logs:
        daemon = log.read_text()
        assert "Traceback" not in daemon and "DSA" not in daemon, daemon
