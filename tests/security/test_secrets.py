"""Finding 9, secrets: a password parameter and a runtime's cloud credentials are never shown.

Not in the admin API's views of clusters, jobs and runtimes, not in the event stream, not in
pitrixd's log, not in any process' command line, and not in plain text anywhere in pitrixd's state
directory: its etcd's data and write-ahead log hold them sealed, with a key kept outside etcd. The
state directory is read raw, byte for byte, so the check does not depend on how a fixed pitrixd
authenticates its own etcd client.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from .deployment import Deployment

pytestmark = pytest.mark.e2e


def _secrets(d: Deployment) -> dict[str, str]:
    return {"b1's password parameter": d.password, "the runtime's secret_access_key": d.runtime_secret}


def _assert_absent(text: str, where: str, d: Deployment) -> None:
    for name, value in _secrets(d).items():
        assert value not in text, f"{name} appears in {where}"


@pytest.mark.parametrize("who", ["bob", "operator"])
async def test_cluster_views_show_no_password(deployment: Deployment, who: str) -> None:
    cid = deployment.clusters["b1"]
    for path in (
        f"/v1/clusters/{cid}",
        "/v1/clusters",
        f"/v1/clusters/{cid}/jobs",
        f"/v1/clusters/{cid}/wait?timeout=1",
    ):
        answer = await deployment.call("GET", path, who)
        assert answer.status == 200, f"{path}: {answer.status} {answer.text[:200]}"
        _assert_absent(answer.text, f"GET {path} as {who}", deployment)


async def test_runtime_views_show_no_credentials(deployment: Deployment) -> None:
    for path in ("/v1/runtimes", "/v1/runtimes/sim", "/v1/runtimes/shared"):
        answer = await deployment.call("GET", path, "operator")
        assert answer.status == 200, answer.text
        _assert_absent(answer.text, f"GET {path}", deployment)


async def test_event_stream_shows_no_secret(deployment: Deployment) -> None:
    """What the admin's stream carried from before the clusters were made until now."""
    text = "".join(deployment.events)
    assert deployment.clusters["b1"] in text, "the event stream saw nothing of b1"
    _assert_absent(text, "the event stream", deployment)


def _files_holding(root: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for name, value in needles.items():
            if value.encode() in data:
                found.setdefault(name, []).append(str(path.relative_to(root)))
    return found


async def test_pitrixd_stores_secrets_sealed(deployment: Deployment) -> None:
    """Every byte under pitrixd's state directory (etcd's db and WAL included): no secret in clear."""
    found = _files_holding(deployment.state_dir, _secrets(deployment))
    assert not found, f"in clear under pitrixd's state dir: {found}"


async def test_pitrixd_logs_no_secret(deployment: Deployment) -> None:
    log = (deployment.workdir / "pitrixd.log").read_text(errors="replace")
    _assert_absent(log, "pitrixd's log", deployment)


def _command_lines() -> dict[str, str]:
    lines = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            lines[entry.name] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
    return lines


async def test_no_secret_in_any_process_command_line(deployment: Deployment) -> None:
    """``ps`` shows every user every command line: no token, credential, password or key there."""
    needles = {**_secrets(deployment), **{f"{who}'s API token": t for who, t in deployment.tokens.items()}}
    needles["a private key"] = "PRIVATE KEY"
    for pid, cmdline in (await asyncio.to_thread(_command_lines)).items():
        for name, value in needles.items():
            assert value not in cmdline, f"{name} in the command line of pid {pid}: {cmdline[:200]}"
