"""pitrix-agent takes confd's whole command line: each flag parses, means what it means in confd
where pitrix has the backend, and is refused by name where it has not; ``-help`` reads like
confd's; ``-log-format text`` writes confd's lines; ``-srv-record`` finds nodes in DNS."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_helpers import AGENT_BIN, agent_env

from pitrix.agent import log
from pitrix.agent.backends.file import FileBackend
from pitrix.agent.config import AgentConfig, ConfigError, Overrides, load_config
from pitrix.agent.flags import FLAGS
from pitrix.agent.main import build_parser, config_from_args, main, parse_quickly
from pitrix.agent.srv import apply_srv, lookup_srv

# confd's flags, from its config.go (kelseyhightower/confd; yunify/confd has a subset of these).
CONFD_FLAGS = [
    "auth-token",
    "backend",
    "basic-auth",
    "client-ca-keys",
    "client-cert",
    "client-key",
    "client-insecure",
    "confdir",
    "config-file",
    "file",
    "filter",
    "interval",
    "keep-stage-file",
    "log-level",
    "node",
    "noop",
    "onetime",
    "prefix",
    "version",
    "scheme",
    "srv-domain",
    "srv-record",
    "sync-only",
    "auth-type",
    "app-id",
    "user-id",
    "role-id",
    "secret-id",
    "path",
    "table",
    "separator",
    "username",
    "password",
    "watch",
]


def test_every_confd_flag_is_known_and_in_help() -> None:
    assert set(CONFD_FLAGS) <= set(FLAGS)
    text = build_parser().format_help()
    assert text.startswith("Usage of pitrix-agent:\n")
    for name in CONFD_FLAGS:
        assert re.search(rf"^  -{re.escape(name)}( string| int| value)?$", text, re.M), name
    assert "  -interval int\n    \tbackend polling interval (default 600)\n" in text
    assert '(default "metad")' in text and '(default "http")' in text and '(default "*")' in text
    # pitrix-agent's own flags, in a group of their own after confd's.
    confds, own_group, own = text.partition("pitrix-agent's own flags")
    assert own_group, text
    for name in ("root", "profile", "metadata-listen", "template-compare", "log-format"):
        assert re.search(rf"^  -{re.escape(name)} string$", own, re.M), name
        assert f"  -{name} " not in confds, name


def test_help_flag_prints_confds_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-help", "--help", "-h"):
        with pytest.raises(SystemExit) as exc:
            main([flag])
        assert exc.value.code == 0
        assert "  -srv-record string\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-table", "t"], "-table: only confd's dynamodb backend uses this flag"),
        (["-auth-type", "token"], "-auth-type: only confd's vault backend uses this flag"),
        (["-auth-token=x"], "-auth-token: only confd's vault backend"),
        (["-app-id", "a"], "-app-id: only confd's vault backend"),
        (["-user-id", "u"], "-user-id: only confd's vault backend"),
        (["-role-id", "r"], "-role-id: only confd's vault backend"),
        (["-secret-id", "s"], "-secret-id: only confd's vault backend"),
        (["-path", "p"], "-path: only confd's vault backend"),
        (["-backend", "consul"], "confd's consul backend is not available in pitrix-agent"),
        (["-backend", "vault"], "confd's vault backend is not available"),
        (["-backend", "dynamodb"], "confd's dynamodb backend is not available"),
        (["-backend", "ssm"], "confd's ssm backend is not available"),
        (["-backend", "rancher"], "confd's rancher backend is not available"),
        (["-node", "http://m", "-client-insecure"], "client-insecure: the metad backend always verifies"),
        (["-backend", "etcd", "-client-cert", "c.pem"], "client-cert: the etcdv3 backend has no TLS"),
        (["-backend", "env", "-log-format", "xml"], "log-format: unknown format 'xml'"),
        (["-backend", "env", "-scheme", "ftp"], "scheme: must be http or https"),
    ],
)
def test_flags_pitrix_cannot_honour_fail_by_name(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pitrix-agent: ") and message in err
    assert "unrecognized arguments" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-onetime", "-backend", "file", "-file", "a.yaml", "--file=b.yaml", "-confdir", "/c"],
        ["--watch", "-node", "http://m:1", "-node=http://n:2", "-interval", "2.5", "-prefix="],
        ["-watch=false", "-noop=T", "-sync-only=0", "--keep-stage-file=TRUE", "-version"],
        ["-log-level", "debug", "-log-format=text", "-root", "/r", "-profile", "appcenter"],
        ["-metadata-listen", "off", "-template-compare=yunify", "-client-ca-keys", "ca.pem"],
        ["-basic-auth", "-client-insecure", "-separator", ":", "-srv-domain", "d", "-table", "t"],
    ],
)
def test_quick_reading_of_the_command_line_is_argparses(argv: list[str]) -> None:
    """Plain command lines are read without argparse (a start's tenth), to the same values."""
    quick = parse_quickly(argv)
    assert quick is not None
    assert vars(quick) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["-help"],
        ["-h"],
        ["-nonsense"],
        ["---watch"],
        ["-watch", "true"],
        ["-watch=maybe"],
        ["-interval", "soon"],
        ["-backend"],
        ["-backend", "-watch"],
        ["-node", "-5"],
        ["stray"],
        ["-onetime", "--", "x"],
    ],
)
def test_anything_unusual_is_left_to_argparse(argv: list[str]) -> None:
    """Help, errors and rare forms keep argparse's answers: the quick reading declines them."""
    assert parse_quickly(argv) is None


def test_confd_flags_with_pitrix_meaning(tmp_path: Path) -> None:
    def parse(*argv: str) -> AgentConfig:
        return config_from_args(build_parser().parse_args(["--root", str(tmp_path), *argv]))

    cfg = parse("-backend", "redis", "-separator", ":", "-password", "pw", "-basic-auth", "-client-insecure")
    assert (cfg.backend, cfg.separator, cfg.password, cfg.nodes) == ("redis", ":", "pw", ["127.0.0.1:6379"])
    assert cfg.basic_auth and cfg.client_insecure
    cfg = parse("-backend", "zookeeper")
    assert cfg.nodes == ["127.0.0.1:2181"]
    cfg = parse("-backend", "etcd", "-node", "127.0.0.1:2379", "-username", "u")
    assert cfg.backend == "etcdv3" and cfg.username == "u"
    cfg = parse("--backend=file", "-file", "d", "-filter", "*.yml", "-log-format", "text")
    assert cfg.filter == "*.yml" and cfg.log_format == "text"


def test_confd_toml_keys_for_the_new_flags(tmp_path: Path) -> None:
    (tmp_path / "confd.toml").write_text(
        'backend = "redis"\nseparator = ":"\nlog-format = "text"\nscheme = "https"\nbasic_auth = true\n'
    )
    cfg = config_from_args(
        build_parser().parse_args(["--root", str(tmp_path), "-config-file", str(tmp_path / "confd.toml")])
    )
    assert (cfg.separator, cfg.log_format, cfg.scheme, cfg.basic_auth) == (":", "text", "https", True)


async def test_file_backend_filter_walks_directories_as_confd(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "b").mkdir(parents=True)
    (data / "a.yaml").write_text("app:\n  x: 1\n  y: 1\n")
    (data / "b" / "c.yaml").write_text("app:\n  y: 2\n")
    (data / "notes.txt").write_text("not: yaml: at all: [\n")
    backend = FileBackend([data], filter="*.yaml")
    assert await backend.get_values(["/app"]) == {"/app/x": "1", "/app/y": "2"}
    with pytest.raises(Exception, match="invalid YAML"):
        await FileBackend([data]).get_values(["/app"])  # confd's default filter, *, reads notes.txt


# -- logs -----------------------------------------------------------------------------------------


def env_resource(root: Path) -> Path:
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/confd/templates/db.tmpl").write_text('host {{getv "/database/host"}}\n')
    (root / "etc/confd/conf.d/db.toml").write_text(
        '[template]\nsrc = "db.tmpl"\ndest = "/etc/db.conf"\nkeys = ["/database"]\n'
    )
    return root / "etc/db.conf"


def run_agent(root: Path, *args: str, host: str = "db1") -> subprocess.CompletedProcess[str]:
    env = {**agent_env(root), "DATABASE_HOST": host}
    return subprocess.run(
        [str(AGENT_BIN), "--root", str(root), "-onetime", "-backend", "env", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_log_format_text_writes_confds_lines(tmp_path: Path) -> None:
    dest = env_resource(tmp_path)
    done = run_agent(tmp_path, "-log-format", "text", "-log-level", "debug")
    assert done.returncode == 0, done.stderr
    shape = re.compile(
        r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)) (\S+) (\S*pitrix-agent)\[(\d+)\]: "
        r"(INFO|DEBUG) (.*)$"
    )
    lines = done.stderr.splitlines()
    matches = [shape.match(line) for line in lines]
    assert all(matches), lines
    messages = [m.group(7) for m in matches if m]
    assert messages[:3] == ["Backend set to env", "Starting confd", "Backend source(s) set to "]
    assert f"Target config {dest} out of sync" in messages
    assert messages.index(f"Target config {dest} has been updated") > messages.index(
        f"Target config {dest} out of sync"
    )
    again = run_agent(tmp_path, "-log-format", "text", "-log-level", "debug")
    assert f"DEBUG Target config {dest} in sync" in again.stderr


def test_log_format_json(tmp_path: Path) -> None:
    """JSON lines whatever stderr is (off a terminal they are the default: test_agent_lean)."""
    dest = env_resource(tmp_path)
    done = run_agent(tmp_path, "-log-format", "json")
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"event": "destination updated", "dest": str(dest)}.items() <= events[0].items()
    assert events[1]["event"] == "applied"


# -- DNS SRV --------------------------------------------------------------------------------------


def srv_answer(query: bytes, targets: list[tuple[int, int, int, str]]) -> bytes:
    """A DNS reply to ``query`` with ``targets`` as SRV records (the name by a pointer)."""
    ident = query[:2]
    end = query.index(b"\0", 12) + 5  # the question: name, type, class
    question = query[12:end]
    if not targets:
        return ident + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question
    answers = b""
    for priority, weight, port, target in targets:
        rdata = struct.pack("!HHH", priority, weight, port)
        for label in target.rstrip(".").split("."):
            rdata += bytes([len(label)]) + label.encode()
        rdata += b"\0"
        answers += struct.pack("!HHHIH", 0xC00C, 33, 1, 60, len(rdata)) + rdata
    return ident + struct.pack("!HHHHH", 0x8180, 1, len(targets), 0, 0) + question + answers


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, records: dict[str, list[tuple[int, int, int, str]]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        labels, offset = [], 12
        while data[offset]:
            labels.append(data[offset + 1 : offset + 1 + data[offset]].decode())
            offset += 1 + data[offset]
        assert self.transport is not None
        self.transport.sendto(srv_answer(data, self.records.get(".".join(labels), [])), addr)


@pytest.fixture
async def dns() -> AsyncIterator[tuple[DnsServer, int]]:
    loop = asyncio.get_running_loop()
    server = DnsServer({})
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield server, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_srv_record_gives_the_nodes(dns: tuple[DnsServer, int], tmp_path: Path) -> None:
    server, port = dns
    servers = [("127.0.0.1", port)]
    server.records["_metad._tcp.example.test"] = [
        (20, 0, 80, "m2.example.test."),
        (10, 5, 8080, "m1.example.test."),
    ]
    server.records["_redis._tcp.example.test"] = [(0, 0, 6379, "r.example.test.")]
    assert await asyncio.to_thread(lookup_srv, "_redis._tcp.example.test", servers) == [
        (0, 0, 6379, "r.example.test.")
    ]

    def config(**flags: str) -> AgentConfig:
        # The flags as the command line sets them, without the start's lookup in the VM's DNS.
        return load_config(tmp_path, None, Overrides(**flags), environ={})  # type: ignore[arg-type]

    cfg = config(srv_domain="example.test", scheme="https")
    await asyncio.to_thread(apply_srv, cfg, servers)
    assert cfg.nodes == ["https://m1.example.test:8080", "https://m2.example.test:80"]
    cfg = config(backend="redis", srv_record="_redis._tcp.example.test")
    await asyncio.to_thread(apply_srv, cfg, servers)
    assert cfg.nodes == ["r.example.test:6379"]
    cfg = config(backend="redis", srv_record="_nothing._tcp.example.test")
    with pytest.raises(ConfigError, match=r"srv-record: cannot get nodes from SRV record .*NXDOMAIN"):
        await asyncio.to_thread(apply_srv, cfg, servers)


def test_confd_wording_of_the_agents_events() -> None:
    out = io.StringIO()
    log.configure("debug", stream=out, confd=True)
    try:
        resource = log.get_logger("pitrix.agent.resource", resource="db", dest="/etc/db.conf")
        resource.warning("noop: destination not modified")
        resource.error("check_cmd rejected the staged file", error="exit status 1: bad config")
        resource.critical("some event", count=2, note="two words")  # type: ignore[attr-defined]
    finally:
        log.unconfigure()
    messages = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    assert messages == [
        "WARNING Noop mode enabled. /etc/db.conf will not be modified",
        "ERROR Config check failed: exit status 1: bad config",
        "FATAL some event count=2 note='two words'",
    ]
