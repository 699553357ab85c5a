"""pitrixd replicas on one etcd must share the key that seals its secrets: one with another key
stops at start, saying so, instead of failing later on records it cannot open."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import uuid
from pathlib import Path

from pitrix.sealing import CANARY_KEY, is_sealed
from pitrix.store import Store
from pitrix.store.tls import EtcdTLS

BIN = Path(sys.executable).parent


async def start(
    state: Path, etcd_url: str, etcd_env: dict[str, str], prefix: str, **env: str
) -> asyncio.subprocess.Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    environ.update(etcd_env)
    environ.update(PITRIX_LOG_FORMAT="json", PITRIX_ETCD__PREFIX=prefix, **env)
    return await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(state), "--api-listen", "127.0.0.1:0",
        "--etcd", etcd_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip


async def ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line and json.loads(line)["ready"], (await process.stderr.read()).decode()


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)


async def test_a_replica_with_another_key_refuses_to_start(
    tmp_path: Path, etcd_url: str, etcd_env: dict[str, str], etcd_tls: EtcdTLS
) -> None:
    prefix = f"/test-{uuid.uuid4().hex}"
    first = await start(tmp_path / "a", etcd_url, etcd_env, prefix)
    try:
        await ready(first)
    finally:
        await stop(first)
    key_file = tmp_path / "a" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    async with Store([etcd_url], prefix=prefix, tls=etcd_tls) as store:
        kv = await store.get(CANARY_KEY)
        assert kv is not None and is_sealed(kv.value)
        kvs, _ = await store.get_prefix("")
        assert all(key_file.read_text().strip().encode() not in kv.value for kv in kvs)  # never in etcd

    # A second replica with a state dir (and so a key) of its own: refused at start, exit 2.
    stranger = await start(tmp_path / "b", etcd_url, etcd_env, prefix)
    _, err = await asyncio.wait_for(stranger.communicate(), 60)
    assert stranger.returncode == 2, err.decode()
    message = err.decode()
    assert "pitrixd: secrets key mismatch" in message
    assert f"{tmp_path / 'b' / 'secret.key'} (made just now)" in message and "same key file" in message
    assert "Traceback" not in message

    # Given the first replica's key file, it starts.
    second = await start(tmp_path / "b", etcd_url, etcd_env, prefix, PITRIX_SECRETS__KEY_FILE=str(key_file))
    try:
        await ready(second)
    finally:
        await stop(second)
