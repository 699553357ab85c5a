"""metad's connection hygiene and bounded input (issue 23, findings 2 and 9).

Real sockets against an in-process metad with tight limits: caps per source and for the
unidentified pool, room for known identities, handshake/header/idle timeouts; and bodies too
large or too deep, command results for commands nobody published.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pitrix import pki
from pitrix.metad import jsonbody
from pitrix.metad.limits import RESERVED_DESCRIPTORS, Admission, ConnectionLimits, LimitsError
from pitrix.metad.server import Metad
from pitrix.metad.tls import MetadTLS
from pitrix.store import Store

from .conftest import Net
from .tlsworld import TLSWorld

DEADLINE = 20.0
TIGHT = ConnectionLimits(
    handshake_timeout=0.5,
    header_timeout=0.5,
    idle_timeout=0.5,
    max_connections=64,
    max_unidentified=8,
    max_unidentified_per_source=4,
    max_per_identity=8,
)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def tight(tls_world: TLSWorld, store: Store, net: Net) -> AsyncIterator[Metad]:
    """A second TLS metad over the seeded world (same CA, same address), with TIGHT limits."""
    directory = tls_world.dir
    tls = MetadTLS(directory / "server.crt", directory / "server.key", tls_world.ca_file, issuer=tls_world.ca)
    metad = Metad(store, tls_world.metad.listen_ip, 0, 0, wait_timeout=2.0, tls=tls, limits=TIGHT)
    await metad.start()
    try:
        yield metad
    finally:
        await metad.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _certless(
    metad: Metad, world: TLSWorld, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        metad.listen_ip,
        _port(metad.instance_url),
        ssl=pki.client_context(world.ca_file),
        local_addr=(source, 0),
    )


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_limits_are_checked_and_fitted_to_the_descriptor_limit() -> None:
    with pytest.raises(LimitsError, match="--max-unidentified"):
        ConnectionLimits(max_connections=100, max_unidentified=100)
    with pytest.raises(LimitsError, match="--header-timeout"):
        ConnectionLimits(header_timeout=0)
    with pytest.raises(LimitsError, match="--max-per-identity"):
        ConnectionLimits(max_per_identity=0)
    fitted = ConnectionLimits().fitted(1024)
    assert fitted.max_connections == 1024 - RESERVED_DESCRIPTORS
    assert 0 < fitted.max_unidentified < fitted.max_connections
    assert fitted.max_unidentified_per_source <= fitted.max_unidentified
    assert ConnectionLimits().fitted(10**6) == ConnectionLimits()


def test_admission_keeps_room_for_known_identities() -> None:
    class Conn:
        def __init__(self, source: str) -> None:
            self.source = source
            self.identity: str | None = None
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True

    admission = Admission(TIGHT)
    one_source = [Conn("10.0.0.66") for _ in range(5)]
    assert [admission.admit(c) for c in one_source] == [True] * 4 + [False]  # per source
    others = [Conn(f"10.0.1.{n}") for n in range(4)]
    assert all(admission.admit(c) for c in others) and admission.unidentified == 8
    # The pool is full: a newcomer (maybe an agent mid-handshake) evicts the oldest.
    agent = Conn("10.0.2.1")
    assert admission.admit(agent) and one_source[0].evicted and admission.unidentified == 8
    assert admission.identify(agent, "instance:i-1") and admission.known == 1
    # An identity holds at most its share; the runtime's (exempt) any number.
    for n in range(TIGHT.max_per_identity - 1):
        extra = Conn(f"10.0.3.{n}")
        assert admission.admit(extra) and admission.identify(extra, "instance:i-1")
    over = Conn("10.0.4.1")
    assert admission.admit(over) and not admission.identify(over, "instance:i-1")
    assert admission.identify(over, "management:pitrix-runtime", exempt=True)
    admission.release(over)
    admission.release(over)  # idempotent
    assert admission.known == TIGHT.max_per_identity


async def test_unidentified_connections_are_capped_per_source_and_closed_by_the_header_timeout(
    tight: Metad, tls_world: TLSWorld, net: Net
) -> None:
    attacker = f"{tight.listen_ip.rsplit('.', 1)[0]}.66"
    held = [await _certless(tight, tls_world, attacker) for _ in range(TIGHT.max_unidentified_per_source)]
    # The source's share is taken: the next one is reset at accept, before any handshake.
    with pytest.raises((ConnectionResetError, ssl.SSLError, OSError)):
        await _certless(tight, tls_world, attacker)
    # Another address is not held back by the first one's share.
    other = await _certless(tight, tls_world, f"{tight.listen_ip.rsplit('.', 1)[0]}.67")
    # None of them sends a request: the header timeout closes each.
    for reader, _ in [*held, other]:
        assert await _closed_by_peer(reader)
    # A bare connect that never starts TLS is closed by the handshake timeout.
    reader, writer = await asyncio.open_connection(tight.listen_ip, _port(tight.instance_url))
    assert await _closed_by_peer(reader)
    writer.close()
    assert tight.admission is not None and tight.admission.unidentified == 0


async def test_a_known_instance_gets_in_while_certless_peers_fill_the_pool(
    tight: Metad, tls_world: TLSWorld, net: Net
) -> None:
    prefix = tight.listen_ip.rsplit(".", 1)[0]
    flood = [
        await _certless(tight, tls_world, f"{prefix}.{70 + n // 4}") for n in range(TIGHT.max_unidentified)
    ]
    assert tight.admission is not None and tight.admission.unidentified == TIGHT.max_unidentified
    context = tls_world.creds["i-web1"].context()
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(net.ip(1), 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            tight.instance_url + "/self/host/instance_id", headers={"Accept": "application/json"}
        ) as response,
    ):
        assert response.status == 200 and await response.json() == "i-web1"
    # It took the oldest certless connection's place.
    assert await _closed_by_peer(flood[0][0])
    for _, writer in flood:
        writer.close()


async def test_a_held_long_poll_outlives_the_idle_timeout(
    tight: Metad, tls_world: TLSWorld, net: Net
) -> None:
    """Idle is between requests only: a long-poll held for wait_timeout (2 s > 0.5 s) answers."""
    context = tls_world.creds["i-web1"].context()
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(net.ip(1), 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(tight.instance_url + "/self/env/port") as response:
            assert response.status == 200
            version = response.headers["X-Metad-Version"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        url = tight.instance_url + f"/self/env/port?wait=true&prev_version={version}"
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            assert response.status == 200 and await response.json() == "80"
        assert loop.time() - began >= 1.5  # it was held, not cut by the 0.5 s idle timeout


async def test_after_an_answer_the_gate_wrote_an_idle_connection_is_closed(
    tight: Metad, tls_world: TLSWorld, net: Net
) -> None:
    """The keep-alive timeout after a parked poll's answer is the gate's (its coarse ticks), and a
    next poll on the connection stops it: that poll outlives the 0.5 s idle timeout."""
    host, port = tight.instance_url.split("://")[1].rsplit(":", 1)
    context = tls_world.creds["i-web1"].context()
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context, local_addr=(net.ip(1), 0))
    loop = asyncio.get_running_loop()
    try:
        for _ in range(2):
            began = loop.time()
            poll = f"/self?wait=true&prev_version={tight.mirror.revision}"
            writer.write(f"GET {poll} HTTP/1.1\r\nHost: m\r\nAccept: application/json\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            length = next(
                int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length:")
            )
            body = await asyncio.wait_for(reader.readexactly(length), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body)["env"]["port"] == "80"
            assert loop.time() - began >= 1.5  # held for the 2 s wait timeout, not cut at 0.5 s idle
        assert await _closed_by_peer(reader)
    finally:
        writer.close()


async def test_an_unidentified_connection_serves_one_request(tls_world: TLSWorld) -> None:
    reader, writer = await _certless(
        tls_world.metad, tls_world, tls_world.metad.listen_ip.rsplit(".", 1)[0] + ".80"
    )
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: metad\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), DEADLINE)  # read to EOF: metad closes after it
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    writer.close()


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("where", ["bootstrap", "applied", "manage"])
async def test_deeply_nested_bodies_are_a_400_naming_the_limit(
    tls_world: TLSWorld, net: Net, where: str
) -> None:
    body = b'{"token": ' + _deep(7000) + b"}"
    if where == "bootstrap":  # no certificate at all
        status, raw = await tls_world.raw(None, "POST", "/self/bootstrap", body=body, local_ip=net.ip(2))
    elif where == "applied":
        status, raw = await tls_world.raw(
            tls_world.creds["i-web1"], "PUT", "/self/status/applied", body=_deep(7000), local_ip=net.ip(1)
        )
    else:
        status, raw = await tls_world.raw(
            tls_world.creds["runtime"], "PUT", "/v1/data/clusters/c1/env", body=_deep(7000), port="manage"
        )
    answer = json.loads(raw)
    assert status == 400, answer
    assert answer["field"] == "body" and f"{jsonbody.MAX_DEPTH} levels" in answer["error"]


async def test_bodies_past_the_size_limit_are_a_413(tls_world: TLSWorld, net: Net) -> None:
    big = json.dumps({"token": "x" * 20_000, "csr": "y"}).encode()
    status, raw = await tls_world.raw(None, "POST", "/self/bootstrap", body=big, local_ip=net.ip(2))
    assert status == 413 and json.loads(raw)["field"] == "body"
    huge = json.dumps({"revision": 1, "resources": {}, "pad": "z" * 300_000}).encode()
    status, raw = await tls_world.raw(
        tls_world.creds["i-web1"], "PUT", "/self/status/applied", body=huge, local_ip=net.ip(1)
    )
    assert status == 413 and "limit" in json.loads(raw)["error"]
    # Under the request limit but over what a stored status document may take.
    bulky = json.dumps({"revision": 1, "resources": {}, "pad": "z" * 120_000}).encode()
    status, raw = await tls_world.raw(
        tls_world.creds["i-web1"], "PUT", "/self/status/applied", body=bulky, local_ip=net.ip(1)
    )
    assert status == 413, raw


async def test_command_results_only_for_the_published_command(
    tls_world: TLSWorld, net: Net, store: Store
) -> None:
    web1 = tls_world.creds["i-web1"]
    ip = net.ip(1)
    result = json.dumps({"status": "executing"}).encode()
    status, raw = await tls_world.raw(
        web1, "PUT", "/self/status/cmd/nobody-posted-this", body=result, local_ip=ip
    )
    assert status == 409 and json.loads(raw)["field"] == "cmd_id"
    assert await store.get("/_pitrix/status/c1/i-web1/cmd/nobody-posted-this") is None
    # cmd-1 is i-web1's published command (seed_world); i-web2 has none.
    status, _ = await tls_world.raw(web1, "PUT", "/self/status/cmd/cmd-1", body=result, local_ip=ip)
    assert status == 200
    web2 = tls_world.creds["i-web2"]
    status, _ = await tls_world.raw(web2, "PUT", "/self/status/cmd/cmd-1", body=result, local_ip=net.ip(2))
    assert status == 409
    # A newer command replaces cmd-1: its result may still be completed, once reported on.
    await tls_world.manage.post_data("/clusters/c1/cmd/i-web1", {"id": "cmd-2", "cmd": "true", "timeout": 5})
    done = json.dumps({"status": "successful", "exit_code": 0}).encode()
    status, _ = await tls_world.raw(web1, "PUT", "/self/status/cmd/cmd-1", body=done, local_ip=ip)
    assert status == 200
    long_tail = json.dumps({"status": "failed", "output_tail": "x" * 70_000}).encode()
    status, raw = await tls_world.raw(web1, "PUT", "/self/status/cmd/cmd-2", body=long_tail, local_ip=ip)
    assert status == 400 and json.loads(raw)["field"] == "output_tail"


def test_every_unit_sets_a_descriptor_limit_metad_fits_in() -> None:
    limits: dict[str, int] = {}
    for unit in sorted((REPO / "systemd").glob("*.service")):
        values = [
            line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("LimitNOFILE=")
        ]
        assert len(values) == 1, unit.name
        limits[unit.name] = int(values[0])
    assert limits["pitrix-metad.service"] >= ConnectionLimits().max_connections + RESERVED_DESCRIPTORS
