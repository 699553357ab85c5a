"""pitrixd stopped by SIGTERM while it starts: it stops as it would once serving, and takes its
embedded etcd with it, rather than dying at once and leaving the etcd behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from pitrix.store.embedded import EmbeddedEtcd

BIN = Path(sys.executable).parent


async def test_sigterm_during_start_up_stops_pitrixd_and_its_etcd(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(state), "--api-listen", "127.0.0.1:0",
        "--log-level", "info", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PITRIX_LOG_FORMAT="json"),
    )  # fmt: skip
    assert process.stderr is not None
    events: list[str] = []
    try:
        async with asyncio.timeout(60):
            # The embedded etcd is up: pitrixd is now connecting and starting its runtime.
            while "embedded etcd" not in events:
                line = await process.stderr.readline()
                assert line, f"pitrixd ended before starting its etcd: {events}"
                with contextlib.suppress(ValueError):
                    events.append(str(json.loads(line).get("event")))
            process.send_signal(signal.SIGTERM)
            rest = (await process.stderr.read()).decode()
            assert await process.wait() == 0, rest
        assert "pitrixd stopping" in rest and "etcd.stopped" in rest, rest
        assert not (state / "etcd.pid.json").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await EmbeddedEtcd(state).stop()  # an etcd left behind by a failure: not by this test
