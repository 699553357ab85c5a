"""Each command's cheap paths (--help, --version, a bad flag) answer before the heavy libraries load.

Structural, not timed: the entry point runs in a fresh interpreter as its console script would, and
the test reads which modules it imported. Each library named here costs a start several times
Python's own (bench/startup.py measures that); a top-level import that pulls one back in fails here.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

import pytest

# Libraries no cheap path needs: the HTTP stack, the models, the loggers, the YAML and TLS ones,
# the event loop itself.
HEAVY = (
    "aiohttp",
    "asyncio",
    "cryptography",
    "pydantic",
    "rich",
    "structlog",
    "yaml",
    "yarl",
)

ENTRY_POINTS = {
    "pitrix": "pitrix.cli.main",
    "pitrixd": "pitrix.daemon",
    "pitrix-metad": "pitrix.metad.main",
    "pitrix-sim": "simulator.main",
}

PROBE = """
import json, sys
sys.argv = {argv!r}
try:
    from {module} import main
    main()
except SystemExit:
    pass
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def imported_by(command: str, *args: str) -> tuple[set[str], str]:
    """The top-level packages ``command ARGS`` imported, and what it printed."""
    probe = PROBE.format(argv=[command, *args], module=ENTRY_POINTS[command])
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    head, _, modules = done.stderr.rpartition("\nMODULES ")
    assert modules, done.stderr
    return {name.split(".")[0] for name in json.loads(modules)}, done.stdout + head


@pytest.mark.parametrize(
    ("command", "args", "says"),
    [
        ("pitrix", ["clusters", "--help"], "usage: pitrix clusters"),
        ("pitrix", ["--version"], "pitrix 0."),
        ("pitrix", ["clusters", "frobnicate"], "invalid choice"),
        ("pitrix", ["--url", "gopher://x:1", "clusters", "list"], "scheme must be"),
        ("pitrixd", ["--help"], "usage: pitrixd"),
        ("pitrixd", ["--version"], "pitrixd 0."),
        ("pitrix-metad", ["--help"], "usage: pitrix-metad"),
        ("pitrix-metad", ["--version"], "pitrix-metad 0."),
        ("pitrix-metad", ["--listen-ip", "nowhere"], "not an IP address"),
        ("pitrix-sim", ["--help"], "usage: pitrix-sim"),
    ],
)
def test_cheap_paths_import_no_heavy_library(command: str, args: list[str], says: str) -> None:
    packages, output = imported_by(command, *args)
    assert says in output, output  # the path really ran, not an import error
    assert sorted(packages & set(HEAVY)) == [], f"{command} {' '.join(args)}"


class _Clusters(http.server.BaseHTTPRequestHandler):
    """pitrixd's answer to GET /v1/clusters, enough for the CLI to print its table."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"clusters": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_one_request_command_runs_without_an_event_loop() -> None:
    """``pitrix clusters list`` over plain http: no asyncio, no ssl (only an https:// address needs
    it), nor any other heavy library."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Clusters)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        packages, output = imported_by("pitrix", "--url", url, "clusters", "list")
    finally:
        server.shutdown()
        server.server_close()
    assert output.startswith("ID  NAME"), output  # the request was answered and printed
    assert sorted(packages & {*HEAVY, "ssl"}) == []


# What each daemon loads to start (its API, store, runtime, simulated clouds), and the libraries only
# some runs need: SSH only once pitrixd makes a key or opens a session, the AppCenter converter only
# with a package import, the agent only in a simulator that runs light VMs.
START_MODULES = {
    "pitrixd": ["pitrix.daemon", "pitrix.api.app", "pitrix.runtime.service", "pitrix.store.embedded"],
    "pitrix-sim": ["simulator.main", "simulator.cloud"],
}
LOADED_ON_USE = {
    "pitrixd": ["asyncssh", "pitrix.appcenter.importer"],
    "pitrix-sim": ["pitrix.agent.agent"],
}


@pytest.mark.parametrize("command", sorted(START_MODULES))
def test_daemon_start_loads_no_library_only_some_runs_use(command: str) -> None:
    probe = (
        f"import importlib, json, sys\nfor m in {START_MODULES[command]!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    run = [sys.executable, "-c", probe]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stdout))
    assert set(START_MODULES[command]) <= modules  # the probe really loaded the start path
    assert sorted(modules & set(LOADED_ON_USE[command])) == [], command
