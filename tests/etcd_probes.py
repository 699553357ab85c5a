"""What an attacker without a client certificate tries against an etcd, and what it must get: nothing.

Each probe speaks raw HTTP over a plain or TLS socket (stdlib only, so the same code can run as an
unprivileged user under the system Python) and returns what came back, for the test to judge:
``answered`` is True only when etcd served the request (an HTTP 200 with a JSON body).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROBE_USER = "pitrix-probe"
RANGE_ALL = json.dumps({"key": "AA==", "range_end": "AA=="}).encode()  # every key: "\0" to "\0"
TIMEOUT = 5.0


@dataclass(frozen=True)
class Outcome:
    answered: bool
    detail: str


def request(
    url: str, path: str = "/v3/kv/range", *, context: ssl.SSLContext | None = None, method: str = "POST"
) -> Outcome:
    """``method`` ``path`` (a range over every key) to ``url``'s host and port; TLS when ``context``.

    ``answered`` is whether etcd served it: a 200 with etcd's JSON (``header`` for the v3 API, a
    member list for the peer port's ``/members``).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 0
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
            sock: socket.socket = raw
            if context is not None:
                sock = context.wrap_socket(raw, server_hostname=host)
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(RANGE_ALL)}\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(head.encode() + RANGE_ALL)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError) as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    body = data.partition(b"\r\n\r\n")[2]
    answered = status.startswith("HTTP/1.1 200") and (b'"header"' in body or b'"peerURLs"' in body)
    return Outcome(answered, status or "(connection closed without a reply)")


def certless(ca_file: Path | None) -> ssl.SSLContext:
    """TLS that trusts etcd's certificate (or any, without ``ca_file``) but presents none of its own."""
    if ca_file is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(ca_file))


def with_cert(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def plain(url: str) -> str:
    """The same address as plain ``http://``."""
    return "http://" + url.split("://", 1)[1]


def unprivileged_probe(state_dir: str, client_url: str, peer_url: str) -> dict[str, object]:
    """Run as another local user: every file under ``state_dir`` it can read, every etcd answer it gets."""
    readable: list[str] = []
    denied: list[str] = []
    for path in [Path(state_dir), *_walk_known(Path(state_dir))]:
        try:
            if path.is_dir():
                list(path.iterdir())
            else:
                path.read_bytes()
            readable.append(str(path))
        except OSError:
            denied.append(str(path))
    answers = {}
    for name, url, context in (
        ("client plain", plain(client_url), None),
        ("client certless", client_url, certless(None)),
        ("peer plain", plain(peer_url), None),
        ("peer certless", peer_url, certless(None)),
    ):
        if name.startswith("peer"):
            outcome = request(url, "/members", context=context, method="GET")
        else:
            outcome = request(url, context=context)
        answers[name] = {"answered": outcome.answered, "detail": outcome.detail}
    return {"readable": readable, "denied": denied, "answers": answers}


def _walk_known(state_dir: Path) -> list[Path]:
    """The paths an attacker would try (listing the directory may itself be refused)."""
    names = ["etcd", "etcd.log", "etcd.pid.json", "etcd.ports.json", "etcd-pki"]
    names += [
        f"etcd-pki/{n}" for n in ("ca.crt", "ca.key", "member.crt", "member.key", "client.crt", "client.key")
    ]
    return [state_dir / n for n in names]


def needs_root() -> str | None:
    """Why the unprivileged-user probe cannot run here (a failure, not a skip: CI runs as root)."""
    if os.geteuid() == 0:
        return None
    return "run as root: the test creates an unprivileged user to probe as (as the demo test does)"


def world_traversable(tmp_path: Path) -> Path:
    """A directory every user may enter, as /var/lib is: only the etcd's own modes keep others out.

    pytest's own tmp directories are 0700, which would hide everything below them and let the
    probe pass whatever the etcd did.
    """
    for parent in [tmp_path, *tmp_path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    return tmp_path


def ensure_probe_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PROBE_USER)
    except KeyError:
        # Another test worker may add it at the same moment: its exit status says nothing then.
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", PROBE_USER], check=False
        )
        return pwd.getpwnam(PROBE_USER)


def probe_as_unprivileged_user(state_dir: Path, client_url: str, peer: str) -> dict[str, object]:
    """Run :func:`unprivileged_probe` as another local user, created if need be (needs root)."""
    user = ensure_probe_user()
    argv = ["/usr/bin/python3", "-c", Path(__file__).read_text(), str(state_dir), client_url, peer]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
    )
    return dict(json.loads(out.stdout))


if __name__ == "__main__":
    print(json.dumps(unprivileged_probe(*sys.argv[1:4])))
