"""pitrixd's stop is bounded whatever its jobs and clients do, and its embedded etcd never outlives it.

A job hangs in a cloud call that never answers while a client holds the cluster's wait request
(as `pitrix clusters create` and the chaos tests do): SIGTERM must still end pitrixd within
``stop_timeout``, with status 0, its embedded etcd stopped. A second signal ends it at once; the
etcd it then leaves for adoption is stopped by the tests' shared teardown (``stop_child``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pitrix.cli.demo import Child, start_child, stop_child
from pitrix.daemon import _stage
from pitrix.store.embedded import PidRecord

BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parents[2] / "examples" / "demo" / "app.yaml"
STOP_TIMEOUT = 4.0
# What may come on top of stop_timeout: pitrixd's last resort ends the process 5 s past it
# whatever its stages do, and the process's own exit on a loaded machine.
SLACK = 7.0


@dataclass
class SilentCloud:
    """A cloud endpoint that accepts connections and never answers: a job calling it hangs."""

    called: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)
        await reader.readuntil(b"\r\n\r\n")  # a whole request came, and gets no answer
        self.called.set()
        await reader.read()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def silent_cloud() -> AsyncIterator[SilentCloud]:
    cloud = SilentCloud()
    cloud.server = await asyncio.start_server(cloud._hold, "127.0.0.1", 0)
    try:
        yield cloud
    finally:
        cloud.server.close()
        for writer in cloud.held:
            writer.close()


def etcd_running(record: PidRecord) -> bool:
    """Whether the recorded pid is still that etcd (its data dir on its command line)."""
    try:
        return record.marker.encode() in Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def record_left(child: Child) -> bool:
    return Path(child.ready["etcd_pid_file"]).exists()


@contextlib.asynccontextmanager
async def pitrixd_with_a_hanging_job(tmp_path: Path) -> AsyncIterator[tuple[Child, PidRecord, Any]]:
    """pitrixd on its embedded etcd with one create hanging in a cloud call and a client holding
    that cluster's wait request: (the process, its etcd's pid record, the wait request's task)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_") or k == "PITRIX_ETCD_BINARY"}
    env["PITRIX_LOG_FORMAT"] = "json"
    argv = [
        str(BIN / "pitrixd"), "--state-dir", str(tmp_path / "state"), "--api-listen", "127.0.0.1:0",
        "--stop-timeout", str(STOP_TIMEOUT), "--log-level", "info",
    ]  # fmt: skip
    async with silent_cloud() as cloud:
        child = await start_child("pitrixd", argv, tmp_path / "pitrixd.log", env)
        try:
            record = PidRecord.load(Path(child.ready["etcd_pid_file"]))
            assert record is not None and etcd_running(record)
            url = child.ready["url"]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                runtime = {
                    "name": "silent", "provider": "qingcloud", "endpoint": cloud.url, "zone": "z1",
                    "access_key_id": "AK", "secret_access_key": "never-used-secret", "timeout": 600,
                }  # fmt: skip
                async with http.post(f"{url}/v1/runtimes", json=runtime) as answer:
                    assert answer.status in (200, 201), await answer.text()
                spec = yaml.safe_load(APP.read_text())
                async with http.post(f"{url}/v1/clusters", json={"runtime": "silent", "app": spec}) as answer:
                    assert answer.status in (200, 201, 202), await answer.text()
                    cid = (await answer.json())["cluster"]["id"]
                waiting = asyncio.create_task(http.get(f"{url}/v1/clusters/{cid}/wait?timeout=600"))
                async with asyncio.timeout(60):
                    await cloud.called.wait()  # the job is inside a cloud call that never ends
                # Answered after the wait request was sent: pitrixd has read that one too.
                async with http.get(f"{url}/v1/clusters/{cid}") as answer:
                    assert answer.status == 200 and not waiting.done()
                try:
                    yield child, record, waiting
                finally:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                        await waiting
        finally:
            await stop_child(child)


async def test_sigterm_stops_pitrixd_and_its_etcd_within_the_bound_while_a_job_hangs(tmp_path: Path) -> None:
    async with pitrixd_with_a_hanging_job(tmp_path) as (child, record, _):
        loop = asyncio.get_running_loop()
        began = loop.time()
        child.process.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT + 20)
        except TimeoutError:
            pytest.fail(f"pitrixd still running {STOP_TIMEOUT + 20:.0f}s after SIGTERM:\n{tail(child.log)}")
        took = loop.time() - began
        assert status == 0, tail(child.log)
        assert took < STOP_TIMEOUT + SLACK, f"stop took {took:.1f}s:\n{tail(child.log)}"
        assert not etcd_running(record), "the embedded etcd outlived pitrixd"
        assert not record_left(child)
        log = child.log.read_text()
        assert "pitrixd stopped" in log and "etcd.stopped" in log


async def test_a_second_signal_exits_at_once_and_the_teardown_stops_the_etcd_left(tmp_path: Path) -> None:
    async with pitrixd_with_a_hanging_job(tmp_path) as (child, record, _):
        child.process.send_signal(signal.SIGTERM)
        # The second signal only once the first is handled: two signals pending together are
        # delivered lowest number first (SIGINT before SIGTERM), which would swap their roles.
        await logged(child, "pitrixd stopping")
        child.process.send_signal(signal.SIGINT)
        status = await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT + 20)
        assert status == 128 + signal.SIGINT, tail(child.log)
        assert "second signal" in child.log.read_text()
        # Left running for the next start to adopt, as after a crash: the teardown's business now.
        assert etcd_running(record)
        await stop_child(child)
        assert not etcd_running(record)
        assert not record_left(child)


async def test_a_stage_that_swallows_its_cancellation_is_abandoned_in_time() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await release.wait()  # goes on as if never asked to stop

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(stubborn())
    began = loop.time()
    assert not await _stage("stubborn", task, loop.time() + 0.2)
    assert loop.time() - began < 2.0 and not task.done()
    assert await _stage("quick", asyncio.sleep(0), loop.time() + 5)
    release.set()
    await task


async def logged(child: Child, text: str, within: float = 20.0) -> None:
    """Until pitrixd's log (a file: read again until it holds ``text``) shows ``text``."""

    async def read() -> None:
        while text not in child.log.read_text(errors="replace"):  # noqa: ASYNC110 - a file to read again
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(read(), within)
    except TimeoutError:
        pytest.fail(f"pitrixd never logged {text!r} in {within:.0f}s:\n{tail(child.log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
