"""Finding 7: another local user of pitrixd's host reads nothing of its stores or its state.

The probe runs as an unprivileged user (created when the suite runs as root, as the demo's test
does), with the system's Python and nothing else: it asks every etcd it can name (pitrixd's, as
its ready line and state directory give it; each metadata VM's) for every key, in plain HTTP and
over TLS without a certificate, and reads every file of pitrixd's state directory it can open.
Directories above the state directory are opened for traversal only (o+x), so what decides is the
mode pitrixd gives its state directory, its files and its sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
from typing import Any

import pytest

from tests.etcd_probes import PROBE_USER, ensure_probe_user, world_traversable

from .deployment import Deployment

pytestmark = pytest.mark.e2e

SYSTEM_PYTHON = "/usr/bin/python3"

# Runs as the unprivileged user: stdlib only. Reads its orders from stdin, answers JSON on stdout.
PROBE = r"""
import base64, json, os, socket, ssl, sys, urllib.parse

orders = json.load(sys.stdin)
ALL = json.dumps({"key": base64.b64encode(b"\0").decode(), "range_end": base64.b64encode(b"\0").decode()})


def http_over(sock, host):
    request = (
        f"POST /v3/kv/range HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(ALL)}\r\nConnection: close\r\n\r\n{ALL}"
    )
    sock.sendall(request.encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


def ask(endpoint):
    answers = {}
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme in ("unix", "unixs") or endpoint.startswith("/"):
        path = url.path or endpoint
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                answers["unix"] = http_over(sock, "localhost")
        except OSError as exc:
            answers["unix"] = "refused: " + repr(exc)
        return answers
    for mode in ("plain", "tls"):
        try:
            with socket.create_connection((url.hostname, url.port), timeout=5) as raw:
                if mode == "tls":
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    with ctx.wrap_socket(raw, server_hostname=url.hostname) as sock:
                        answers[mode] = http_over(sock, url.netloc)
                else:
                    answers[mode] = http_over(raw, url.netloc)
        except (OSError, ssl.SSLError) as exc:
            answers[mode] = "refused: " + repr(exc)
    return answers


readable = {}
for top, dirs, files in os.walk(orders["state_dir"]):
    for name in files:
        path = os.path.join(top, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        readable[path] = [label for label, needle in orders["needles"].items() if needle.encode() in data]
etcd = {endpoint: ask(endpoint) for endpoint in orders["endpoints"]}
print(json.dumps({"uid": os.getuid(), "etcd": etcd, "readable": readable}))
"""


def _pitrixd_etcd_endpoints(d: Deployment) -> list[str]:
    """The ready line's endpoints, and the client port the embedded etcd records in the state dir."""
    endpoints = list(d.etcd_endpoints)
    for record in d.state_dir.glob("**/etcd.ports.json"):
        try:
            ports = json.loads(record.read_text())
            endpoints.append(f"http://{ports.get('host', '127.0.0.1')}:{int(ports['client'])}")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for socket_file in d.state_dir.glob("**/*.sock"):
        endpoints.append(f"unix://{socket_file}")
    return sorted(set(endpoints))


def _run_probe(user: pwd.struct_passwd, orders: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", PROBE],
        input=json.dumps(orders),
        capture_output=True,
        text=True,
        timeout=60,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.fixture(scope="module")
async def probed(deployment: Deployment) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create an unprivileged user and run the probe as it")
    if not shutil.which(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run the probe as another user")
    user = ensure_probe_user()
    world_traversable(deployment.state_dir.parent)
    endpoints = _pitrixd_etcd_endpoints(deployment)
    endpoints += [
        f"http://{vm.ip}:{port}" for vm in deployment.metadata.values() for port in vm.etcd_ports("client")
    ]
    needles = {
        "a private key": "PRIVATE KEY",
        "the runtime's secret_access_key": deployment.runtime_secret,
        "b1's password parameter": deployment.password,
        **{f"{who}'s API token": token for who, token in deployment.tokens.items()},
    }
    orders = {"endpoints": endpoints, "state_dir": str(deployment.state_dir), "needles": needles}
    result = await asyncio.to_thread(_run_probe, user, orders)
    assert result["uid"] == user.pw_uid
    result["pitrixd_endpoints"] = _pitrixd_etcd_endpoints(deployment)
    return result


def _answered(text: str) -> bool:
    """An etcd answer that carries data (a refusal is a closed connection, a TLS alert or a 4xx)."""
    if text.startswith("refused:"):
        return False
    status = text.split(" ", 2)[1] if text.startswith("HTTP/") else ""
    return status.startswith("2") or '"kvs"' in text


async def test_local_user_gets_nothing_from_pitrixds_etcd(probed: dict[str, Any]) -> None:
    assert probed["pitrixd_endpoints"], "pitrixd named no etcd endpoint"
    for endpoint in probed["pitrixd_endpoints"]:
        for mode, text in probed["etcd"][endpoint].items():
            assert not _answered(text), (
                f"{PROBE_USER} read pitrixd's etcd at {endpoint} ({mode}): {text[:300]}"
            )


async def test_local_user_gets_nothing_from_a_metadata_etcd(probed: dict[str, Any]) -> None:
    for endpoint, answers in probed["etcd"].items():
        if endpoint in probed["pitrixd_endpoints"]:
            continue
        for mode, text in answers.items():
            assert not _answered(text), (
                f"{PROBE_USER} read the metadata etcd {endpoint} ({mode}): {text[:300]}"
            )


async def test_local_user_reads_no_secret_file_of_pitrixd(probed: dict[str, Any]) -> None:
    leaking = {path: labels for path, labels in probed["readable"].items() if labels}
    assert not leaking, f"{PROBE_USER} reads secrets in {leaking}"
    store_files = [path for path in probed["readable"] if "/member/" in path]
    assert not store_files, f"{PROBE_USER} reads the etcd data of every owner: {store_files}"
