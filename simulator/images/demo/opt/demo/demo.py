"""The demo application: a web server and a reverse proxy, stdlib only.

    demo.py start web|lb      start the role's server as a daemon; returns once it listens
    demo.py stop web|lb       stop it
    demo.py reload web|lb     make the server re-read its config (SIGHUP); no-op when not running
    demo.py check-upstreams F validate an upstream list before it replaces the live one
    demo.py check-web F       validate a web config (its greeting) before it replaces the live one

Paths are relative to the VM root (the working directory), as in every pitrix image.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = 8000
RUN = Path("var/run")
LOG = Path("var/log")
WEB_CONF = Path("etc/demo/web.conf")
UPSTREAMS = Path("etc/demo/upstreams.conf")
GREETING = re.compile(r"[A-Za-z0-9 ,.!?'-]{1,64}")


def read_conf(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def parse_upstreams(text: str) -> list[tuple[str, int]]:
    servers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, address = line.partition(" ")
        host, _, port = address.strip().rpartition(":")
        if word != "server" or not host or not port.isdigit():
            raise ValueError(f"line {number}: expected 'server HOST:PORT', got {raw!r}")
        servers.append((host, int(port)))
    return servers


class WebHandler(BaseHTTPRequestHandler):
    identity = ""

    def do_GET(self) -> None:
        body = f"{self.identity}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Upstreams:
    """The proxy's upstream list, swapped whole on reload so in-flight requests keep theirs."""

    def __init__(self) -> None:
        self.servers: list[tuple[str, int]] = []
        self._cycle = itertools.cycle([])
        self._lock = threading.Lock()

    def load(self) -> None:
        servers = parse_upstreams(UPSTREAMS.read_text()) if UPSTREAMS.exists() else []
        with self._lock:
            self.servers = servers
            self._cycle = itertools.cycle(servers)
        print(f"upstreams: {len(servers)} servers", file=sys.stderr, flush=True)

    def pick(self) -> list[tuple[str, int]]:
        """Every upstream, starting with the next in round-robin order."""
        with self._lock:
            if not self.servers:
                return []
            first = next(self._cycle)
            start = self.servers.index(first)
            return self.servers[start:] + self.servers[:start]


class ProxyHandler(BaseHTTPRequestHandler):
    upstreams = Upstreams()

    def do_GET(self) -> None:
        if self.path == "/_lb/upstreams":
            self._answer(200, "".join(f"{h}:{p}\n" for h, p in self.upstreams.servers).encode())
            return
        for host, port in self.upstreams.pick():
            try:
                conn = http.client.HTTPConnection(host, port, timeout=5)
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                conn.close()
            except OSError:
                continue
            self._answer(response.status, body, upstream=f"{host}:{port}")
            return
        self._answer(502 if self.upstreams.servers else 503, b"no upstream answered\n")

    def _answer(self, status: int, body: bytes, upstream: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if upstream:
            self.send_header("X-Upstream", upstream)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def pidfile(role: str) -> Path:
    return RUN / f"{role}.pid"


def running_pid(role: str) -> int | None:
    try:
        pid = int(pidfile(role).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def load_web() -> dict[str, str]:
    """Read web.conf; answers are ``<node_id> <instance_id> <greeting>``."""
    conf = read_conf(WEB_CONF)
    WebHandler.identity = f"{conf['node_id']} {conf['instance_id']} {conf.get('greeting', 'hello')}"
    return conf


def make_server(role: str) -> ThreadingHTTPServer:
    if role == "web":
        conf = load_web()
        return ThreadingHTTPServer((conf["ip"], int(conf.get("port", PORT))), WebHandler)
    ip = os.environ.get("PITRIX_VM_IP", "127.0.0.1")
    ProxyHandler.upstreams.load()
    return ThreadingHTTPServer((ip, PORT), ProxyHandler)


def start(role: str) -> int:
    """Daemonize; the parent returns only once the child listens (or failed)."""
    if running_pid(role):
        print(f"{role} already running")
        return 0
    RUN.mkdir(parents=True, exist_ok=True)
    LOG.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            message = pipe.read()
        print(message.strip())
        return 0 if message.startswith("listening") else 1
    os.close(read_fd)
    os.setsid()
    log = os.open(LOG / f"{role}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    with os.fdopen(write_fd, "w") as notify:
        try:
            server = make_server(role)
        except Exception as exc:
            notify.write(f"failed: {exc}\n")
            os._exit(1)
        if role == "lb":
            signal.signal(signal.SIGHUP, lambda *_: ProxyHandler.upstreams.load())
        else:
            signal.signal(signal.SIGHUP, lambda *_: load_web())
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        tmp = pidfile(role).with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(pidfile(role))
        host, port = server.server_address[:2]
        notify.write(f"listening on {host}:{port}\n")
    server.serve_forever()
    pidfile(role).unlink(missing_ok=True)
    os._exit(0)


def stop(role: str) -> int:
    pid = running_pid(role)
    if pid is None:
        print(f"{role} not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    print(f"{role} stopping (pid {pid})")
    return 0


def reload(role: str) -> int:
    pid = running_pid(role)
    if pid is None:
        print(f"{role} not running; nothing to reload")
        return 0
    os.kill(pid, signal.SIGHUP)
    print(f"{role} reloaded (pid {pid})")
    return 0


def check_upstreams(path: str) -> int:
    try:
        servers = parse_upstreams(Path(path).read_text())
    except (OSError, ValueError) as exc:
        print(f"invalid upstream list {path}: {exc}", file=sys.stderr)
        return 1
    print(f"{len(servers)} upstreams ok")
    return 0


def check_web(path: str) -> int:
    try:
        greeting = read_conf(Path(path)).get("greeting", "")
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if not GREETING.fullmatch(greeting):
        print(f"invalid greeting {greeting!r}: 1-64 letters, digits, spaces or ,.!?'-", file=sys.stderr)
        return 1
    print("web config ok")
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "start": start,
        "stop": stop,
        "reload": reload,
        "check-upstreams": check_upstreams,
        "check-web": check_web,
    }
    if len(argv) != 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    if not argv[0].startswith("check-") and argv[1] not in ("web", "lb"):
        print(f"unknown role {argv[1]!r}: expected web or lb", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
