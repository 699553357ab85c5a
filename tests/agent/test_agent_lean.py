"""The agent's start stays light: which modules each entry path loads (a structural check, run in
a fresh interpreter), and the stdlib stand-ins for what it no longer imports (the certificate's
dates, structlog's JSON lines)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from agent_helpers import read_fifo_line

from pitrix import logs, pki
from pitrix.agent import log
from pitrix.agent.certdates import validity
from pitrix.agent.report import utc_now

REPO = Path(__file__).resolve().parents[2]
# Never on a one-shot render of plain templates (file backend, no commands).
NOT_ON_ONE_SHOT = [
    "asyncio",
    "ssl",
    "uvloop",
    "structlog",
    "rich",
    "cryptography",
    "pydantic",
    "aiohttp",
    "re2",
    "httptools",
    "hashlib",
    "tempfile",
    "logging",
    "pitrix.pki",
    "pitrix.logs",
    "pitrix.agent.agent",
    "inspect",  # deferred by main.defer_inspect; dataclasses would load it for nothing
    "ast",
    "shutil",  # argparse's terminal width
    "socket",  # sdnotify's, for a command's environment only
    # Loaded where used, never by templates that use none of them (pitrix.gotemplate's names come
    # from their submodule on first use; confd's JSON, YAML and time functions, lookupIP/SRV,
    # float formatting and metad's key space load what they need when called).
    "pitrix.gotemplate.encoding",
    "pitrix.gotemplate.gotime",
    "pitrix.gotemplate.yunify",
    "pitrix.agent.netlookup",
    "pitrix.metad.keyspace",
    "decimal",
    "argparse",  # a plain command line is read without it (main.parse_quickly)
]
# Never in a watching agent with a good certificate (the metad backend's path).
NOT_ON_WATCH = [
    "datetime",  # ~0.4 MiB: reports stamp their time from ``time`` (a client certificate loads it)
    "hashlib",  # OpenSSL's digests: ~0.7 MiB (the roster's digest is CPython's own SHA-256)
    "zlib",
    "structlog",
    "rich",
    "cryptography",
    "pydantic",
    "aiohttp",
    "yaml",
    "re2",
    "pitrix.pki",
    "argparse",
]

TEMPLATE = '{{range lsdir "/hosts"}}{{.}}={{getv (printf "/hosts/%s/ip" .)}}\n{{end}}'
DATA = "hosts:\n  a:\n    ip: 10.0.0.1\n  b:\n    ip: 10.0.0.2\n"


def run_python(code: str, cwd: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter with this tree first on its path; its JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PITRIX_VM_ROOT", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    answer["stderr"] = done.stderr
    return answer


def confdir(root: Path, *, reload_cmd: str = "") -> list[str]:
    conf = root / "etc/confd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "templates").mkdir(parents=True)
    (conf / "templates/hosts.tmpl").write_text(TEMPLATE)
    extra = f"reload_cmd = {json.dumps(reload_cmd)}\n" if reload_cmd else ""
    (conf / "conf.d/hosts.toml").write_text(
        f'[template]\nsrc = "hosts.tmpl"\ndest = "/etc/hosts.conf"\nkeys = ["/hosts"]\n{extra}'
    )
    (root / "data.yaml").write_text(DATA)
    return ["-onetime", "-backend", "file", "-file", str(root / "data.yaml"), "--root", str(root)]


# A module main.defer_inspect left standing in, never loaded, does not count as loaded.
ONE_SHOT = """
import json, sys
from pitrix.agent.main import _Deferred, main
status = main({argv!r})
loaded = sorted(name for name, module in sys.modules.items() if not isinstance(module, _Deferred))
print(json.dumps({{"status": status, "modules": loaded}}))
"""


def test_one_shot_render_loads_no_event_loop_structlog_or_tls(tmp_path: Path) -> None:
    argv = confdir(tmp_path)
    answer = run_python(ONE_SHOT.format(argv=argv), tmp_path)
    assert answer["status"] == 0
    assert (tmp_path / "etc/hosts.conf").read_text() == "a=10.0.0.1\nb=10.0.0.2\n"
    modules = set(answer["modules"])  # type: ignore[call-overload]
    # It did take the inline path, and read YAML: the listing is the run's, not an empty one.
    assert {"pitrix.agent.oneshot", "yaml", "pitrix.gotemplate"} <= modules
    assert sorted(m for m in NOT_ON_ONE_SHOT if m in modules) == []
    # structlog's JSON lines all the same, from the line logger.
    lines = [json.loads(line) for line in str(answer["stderr"]).splitlines()]
    assert [line["event"] for line in lines] == ["destination updated", "applied"]
    assert lines[1]["resources"] == {"hosts": {"ok": True, "error": None}}


def test_second_one_shot_reads_unchanged_files_from_the_parse_cache(tmp_path: Path) -> None:
    """Neither TOML nor YAML is parsed again for files unchanged since the last run (and left
    alone long enough to trust their timestamps), and the output is the same."""
    argv = confdir(tmp_path)
    old = 1_000_000_000
    for path in [tmp_path / "data.yaml", *(tmp_path / "etc/confd/conf.d").iterdir()]:
        os.utime(path, (old, old))
    first = run_python(ONE_SHOT.format(argv=argv), tmp_path)
    assert {"yaml", "tomllib"} <= set(first["modules"])  # type: ignore[call-overload]
    (tmp_path / "etc/hosts.conf").unlink()
    second = run_python(ONE_SHOT.format(argv=argv), tmp_path)
    assert second["status"] == 0
    assert (tmp_path / "etc/hosts.conf").read_text() == "a=10.0.0.1\nb=10.0.0.2\n"
    modules = set(second["modules"])  # type: ignore[call-overload]
    assert "pitrix.agent.parsecache" in modules
    assert (
        sorted(m for m in ("yaml", "tomllib", "datetime", "base64", *NOT_ON_ONE_SHOT) if m in modules) == []
    )
    # A changed data file is read again.
    (tmp_path / "data.yaml").write_text(DATA.replace("10.0.0.2", "10.0.0.9"))
    third = run_python(ONE_SHOT.format(argv=argv), tmp_path)
    assert third["status"] == 0
    assert (tmp_path / "etc/hosts.conf").read_text() == "a=10.0.0.1\nb=10.0.0.9\n"
    assert "yaml" in set(third["modules"])  # type: ignore[call-overload]


def test_one_shot_with_a_reload_cmd_runs_on_the_loop(tmp_path: Path) -> None:
    argv = confdir(tmp_path, reload_cmd="echo reloaded > ./etc/reloaded")
    answer = run_python(ONE_SHOT.format(argv=argv), tmp_path)
    assert answer["status"] == 0
    assert (tmp_path / "etc/reloaded").read_text() == "reloaded\n"
    modules = set(answer["modules"])  # type: ignore[call-overload]
    assert {"asyncio", "pitrix.agent.agent"} <= modules
    assert (
        sorted(m for m in ("structlog", "rich", "cryptography", "pydantic", "aiohttp") if m in modules) == []
    )


def test_watching_agent_loads_neither_structlog_nor_cryptography(tmp_path: Path) -> None:
    answer = run_python(
        """
        import json, sys
        import pitrix.agent.agent, pitrix.agent.backends.metad, pitrix.agent.main
        print(json.dumps({"modules": sorted(sys.modules)}))
        """,
        tmp_path,
    )
    modules = set(answer["modules"])  # type: ignore[call-overload]
    assert {"pitrix.agent.certificate", "pitrix.agent.metad_client"} <= modules
    assert sorted(m for m in NOT_ON_WATCH if m in modules) == []


def test_certificate_validity_matches_cryptography() -> None:
    ca = pki.CertificateAuthority.create("lean test CA")
    issued = ca.issue_instance("i-lean", "usr-1", "cl-1", lifetime=dt.timedelta(hours=1))
    # A chain file (the agent's certificate followed by its issuer's): the first one counts.
    for pem in (issued.cert_pem + ca.cert_pem, ca.cert_pem):
        parsed = pki.cert_from_pem(pem)
        not_before, not_after = validity(pem)
        assert (not_before, not_after) == (parsed.not_valid_before_utc, parsed.not_valid_after_utc)
        assert not_before.tzinfo == dt.UTC
    with pytest.raises(ValueError):
        validity(b"no certificate here")
    with pytest.raises(ValueError):
        validity(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")


def test_report_timestamps_are_datetimes_format() -> None:
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = utc_now()
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == stamp
    assert before <= parsed <= after


def test_line_logger_writes_structlogs_json_lines() -> None:
    """Same keys in the same order with the same values (the timestamp's format too)."""
    ours, theirs = io.StringIO(), io.StringIO()

    def emit(logger: log.Logger) -> None:
        bound = logger.bind(resource="r1")
        bound.info("destination updated", dest="/etc/x", n=2, path=Path("/p"))
        bound.debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError:
            bound.exception("apply failed unexpectedly")

    logs.configure("info", json=True, stream=theirs)
    emit(log.get_logger("pitrix.agent.resource", cluster="c"))  # not configured: structlog's
    log.configure("info", json_lines=True, stream=ours)
    try:
        emit(log.get_logger("pitrix.agent.resource", cluster="c"))
    finally:
        log.unconfigure()
    mine = [json.loads(line) for line in ours.getvalue().splitlines()]
    structlogs = [json.loads(line) for line in theirs.getvalue().splitlines()]
    assert len(mine) == len(structlogs) == 2
    for a, b in zip(mine, structlogs, strict=True):
        assert list(a) == list(b)
        assert dt.datetime.fromisoformat(a.pop("timestamp")).tzinfo == dt.UTC
        b.pop("timestamp")
        a_exc, b_exc = a.pop("exception", ""), b.pop("exception", "")
        assert a == b
        assert a_exc.splitlines()[-1:] == b_exc.splitlines()[-1:]
    assert mine[1]["level"] == "error"
    assert a_exc.startswith("Traceback") and a_exc.endswith("ValueError: boom")


# A watching agent (file backend) in a fresh interpreter: main() returns once SIGTERM stops it,
# and then tells what it loaded and which loop it ran on.
WATCHING = """
import json, sys
from pitrix.agent.main import _Deferred, defer_inspect, main
defer_inspect()  # as main() does first; asyncio, imported below, would load it otherwise
import asyncio
loops = []
real_run = asyncio.run
def run(coro, **kwargs):
    async def noting():
        loops.append(type(asyncio.get_running_loop()).__module__)
        return await coro
    return real_run(noting(), **kwargs)
asyncio.run = run
status = main({argv!r})
loaded = sorted(name for name, module in sys.modules.items() if not isinstance(module, _Deferred))
print(json.dumps({{"status": status, "modules": loaded, "loops": loops}}))
"""


async def test_watching_agent_runs_on_the_stdlib_loop_without_inspect_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """uvloop's extension and ``inspect`` (ast, dis) were ~3 MiB of a watching agent's RSS; the
    stdlib loop and stopsignal's handlers leave both out, and SIGTERM still ends it cleanly."""
    fifo = tmp_path / "reloaded"
    os.mkfifo(fifo)
    argv = confdir(tmp_path, reload_cmd=f"echo reloaded > {fifo}")
    argv = ["-watch" if a == "-onetime" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PITRIX_VM_ROOT", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(WATCHING.format(argv=argv)), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert await read_fifo_line(fifo, 60) == "reloaded\n"  # watching: its first round is done
        assert (tmp_path / "etc/hosts.conf").read_text() == "a=10.0.0.1\nb=10.0.0.2\n"
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    answer = json.loads(out.decode().splitlines()[-1])
    assert answer["status"] == 0
    assert answer["loops"] == ["asyncio.unix_events"]
    modules = set(answer["modules"])
    assert {"asyncio", "pitrix.agent.agent", "pitrix.agent.stopsignal"} <= modules
    unwanted = ("uvloop", "inspect", "ast", "dis", *NOT_ON_WATCH)
    # The file backend reads YAML, and PyYAML imports datetime: both are the metad path's only.
    assert sorted(m for m in unwanted if m in modules and m not in ("yaml", "datetime")) == []
