"""pitrixd started with its runtime options from the file, the environment and flags, and refusing
a bad one at start (exit 2, the key named) instead of failing later."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from pitrix.cli.demo import start_child, stop_child

BIN = Path(sys.executable).parent


def log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict)]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_") or k == "PITRIX_ETCD_BINARY"}
    env["PITRIX_LOG_FORMAT"] = "json"
    return env


async def test_pitrixd_runs_with_runtime_settings_from_file_environment_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "pitrixd.toml"
    config.write_text(
        '[runtime]\nreplica_id = "from-file"\nmax_jobs = 2\n[runtime.step_retry]\nattempts = 2\n'
    )
    env = clean_env()
    env["PITRIX_RUNTIME__REPLICA_ID"] = "from-env"
    argv = [
        str(BIN / "pitrixd"), "--config", str(config), "--state-dir", str(tmp_path / "state"),
        "--api-listen", "127.0.0.1:0", "--owner-ttl", "4", "--stop-timeout", "5",
    ]  # fmt: skip
    child = await start_child("pitrixd", argv, tmp_path / "pitrixd.log", env)
    try:
        assert child.ready["replica"] == "from-env"  # the environment over the file
        leases = [r for r in log_records(tmp_path / "pitrixd.log") if r.get("event") == "replica lease"]
        assert [r["ttl"] for r in leases] == [4]  # the flag's owner TTL is the replica lease's
    finally:
        await stop_child(child)
    assert child.process.returncode == 0


async def test_pitrixd_refuses_a_bad_runtime_setting_naming_it(tmp_path: Path) -> None:
    env = clean_env()
    env["PITRIX_RUNTIME__RECOVERY__GRACE"] = "0"
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(tmp_path / "state"), "--max-jobs", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "runtime.recovery.grace: must be more than 0" in err.decode(), err.decode()
    assert "Traceback" not in err.decode()
