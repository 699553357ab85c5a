"""Long-polls parked at the connection's gate: held without aiohttp, answered as aiohttp answers."""

from __future__ import annotations

import asyncio
import json

from pitrix.metad import keyspace, waiters
from pitrix.metad.gate import GATES_KEY, Gate, Gates
from pitrix.metad.parking import BY_AIOHTTP, ROOT_VIEW, SELF_VIEW, answer_form, poll_target, version_span
from pitrix.metad.server import Metad
from pitrix.metad.tls import MetadTLS
from pitrix.store import Store

from .conftest import Net
from .tlsworld import TLSWorld

DEADLINE = 20.0


def _gates(metad: Metad) -> Gates:
    return metad._runners["instance"].app[GATES_KEY]


def _parked(metad: Metad) -> list[Gate]:
    return [gate for gate in _gates(metad).open if gate.parked is not None]


async def _connect(
    world: TLSWorld, net: Net, who: str, n: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = world.metad.instance_url.split("://")[1].rsplit(":", 1)
    return await asyncio.open_connection(
        host, int(port), ssl=world.creds[who].context(), local_addr=(net.ip(n), 0)
    )


def _get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: metadata\r\nAccept: application/json\r\n\r\n".encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), DEADLINE)
    return int(lines[0].split()[1]), headers, body


def test_only_one_plain_complete_get_head_is_a_poll_target() -> None:
    head = b"GET /self/env?wait=true&prev_version=7&wait=no HTTP/1.1\r\nHost: m\r\n\r\n"
    assert poll_target(head) == ("/self/env", {"wait": "true", "prev_version": "7"})
    assert poll_target(b"GET / HTTP/1.0\r\n\r\n") == ("/", {})
    refused = [
        head[:-2],  # not complete
        head + b"GET / HTTP/1.1\r\n\r\n",  # a second request behind it
        head.replace(b"GET", b"PUT"),
        head.replace(b"Host: m", b"Content-Length: 0"),
        head.replace(b"Host: m", b"Transfer-Encoding: chunked"),
        head.replace(b"/self/env", b"/self/%65nv"),  # escapes: aiohttp's decoding decides
        head.replace(b"/self/env", b"/self/./env"),  # answered with a redirect
        head.replace(b"/self/env", b"/self//env"),
        head.replace(b"wait=true", b"wait=tr+ue"),
        head.replace(b"HTTP/1.1", b"HTTP/2.0"),
        head.replace(b"Host: m", b"no colon"),
        b"GET http://m/self HTTP/1.1\r\n\r\n",
    ]
    assert [poll_target(data) for data in refused] == [None] * len(refused)


def test_only_a_plain_json_poll_of_the_whole_view_is_answered_at_the_gate() -> None:
    def form(head: bytes) -> int:
        target = poll_target(head)
        assert target is not None
        return answer_form(head, *target)

    head = b"GET /self?wait=true HTTP/1.1\r\nHost: m\r\naccept:  application/json \r\n\r\n"
    assert form(head) == SELF_VIEW
    assert form(head.replace(b"/self?", b"/self/?")) == SELF_VIEW
    assert form(head.replace(b"/self?", b"/?")) == ROOT_VIEW
    by_aiohttp = [
        head.replace(b"/self?", b"/self/env?"),
        head.replace(b"wait=true", b"wait=true&pretty=1"),
        head.replace(b"HTTP/1.1", b"HTTP/1.0"),
        head.replace(b"application/json", b"text/plain"),
        head.replace(b"application/json", b"application/json;q=1"),
        head.replace(b"Host: m", b"Connection: keep-alive"),
        head.replace(b"Host: m", b"Accept: application/json"),  # two of them
        head.replace(b"accept:  application/json ", b"X-A: 1"),  # none
    ]
    assert [form(data) for data in by_aiohttp] == [BY_AIOHTTP] * len(by_aiohttp)


def test_a_poll_is_known_again_only_by_the_digits_of_the_prev_version_it_was_read_with() -> None:
    def span(head: bytes) -> bytes | None:
        target = poll_target(head)
        assert target is not None
        found = version_span(head, target[1].get("prev_version"))
        return None if found is None else head[found[0] : found[1]]

    head = b"GET /self?wait=true&prev_version=42 HTTP/1.1\r\nAccept: application/json\r\n\r\n"
    assert span(head) == b"42"
    assert span(head.replace(b"?wait=true&prev_version=42", b"?prev_version=7&wait=true")) == b"7"
    # The first prev_version of the query is the one read; another word ending in it is not it.
    assert span(head.replace(b"wait=true&", b"xprev_version=9&wait=true&")) == b"42"
    assert span(head.replace(b"wait=true&", b"wait=true&prev_version=5&")) == b"5"
    no_span = [
        head.replace(b"=42", b"=4x"),  # not an integer: read as "now", so no digits to vary
        head.replace(b"=42", b"="),
        head.replace(b"wait=true&", b"wait=true&prev_version&"),  # read as "", not 42
        head.replace(b"prev_version=42", b"pre_version=42"),  # the legacy name: parsed each time
        head.replace(b"&prev_version=42", b""),
    ]
    assert [span(data) for data in no_span] == [None] * len(no_span)


async def _raw_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), DEADLINE)


async def _gate_answers_byte_for_byte_as_aiohttp(tls_world: TLSWorld, net: Net, base: int) -> None:
    """The same request for the same view, once answered by the gate and once by aiohttp."""
    metad = tls_world.metad
    for n, target in enumerate(("/self", "/")):
        for attempt in range(3):  # until both answers fall in one second (the Date header)
            reader, writer = await _connect(tls_world, net, "i-web1", 1)
            try:
                request = _get(f"{target}?wait=true&prev_version={metad.mirror.revision}")
                writer.write(request)
                await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
                (gate,) = _parked(metad)
                await tls_world.manage.put_data("/clusters/c1/env/web/workers", n * 10 + attempt)
                by_gate = await _raw_answer(reader)
                assert gate.handler is None  # aiohttp has not seen this connection yet
                writer.write(request)  # its view changed since prev_version: aiohttp answers at once
                by_aiohttp = await _raw_answer(reader)
                assert gate.handler is not None
            finally:
                writer.close()
            date = next(line for line in by_gate.split(b"\r\n") if line.startswith(b"Date:"))
            if date in by_aiohttp:
                break
        assert by_gate == by_aiohttp
        assert json.loads(by_gate.partition(b"\r\n\r\n")[2]) != {}


async def test_a_parked_poll_is_answered_as_a_held_one(tls_world: TLSWorld, net: Net) -> None:
    metad = tls_world.metad
    since = metad.mirror.revision
    base = len(metad.mirror.waiters)  # the issuer's own waiter (issuance.GraceRevoker)
    reader, writer = await _connect(tls_world, net, "i-web1", 1)
    try:
        writer.write(_get(f"/self?wait=true&prev_version={since}"))
        await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
        (gate,) = _parked(metad)
        assert gate.handler is None  # aiohttp was not given this connection yet
        # Its paths are taken as the waiter index spells them, unchecked: they must be.
        assert gate.parked is not None and gate.parked.deps
        assert all(waiters._normal(dep) == dep for dep in gate.parked.deps)
        changed = await tls_world.manage.put_data("/clusters/c1/env/web/workers", 9)
        status, headers, body = await _answer(reader)
        assert status == 200 and int(headers["x-metad-version"]) == changed
        assert gate.handler is None and not gate.prewaited  # the gate wrote the answer itself
        # The same answer a fresh, never parked request gets.
        writer.write(_get("/self"))
        again = await _answer(reader)
        assert again[0] == 200 and again[2] == body
        assert json.loads(body)["env"]["workers"] == "9"
        assert gate.handler is not None

        # Kept alive: the next poll is parked too, with aiohttp's handler idle behind it.
        writer.write(_get(f"/self/env/workers?wait=true&prev_version={changed}"))
        await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
        assert _parked(metad) == [gate]
        # Bytes behind a parked poll: all go to aiohttp, in order (the poll held there now).
        writer.write(_get("/self/env/port"))
        await asyncio.wait_for(
            metad.mirror.waiters.wait_until(lambda n: n == base + 1 and not _parked(metad)), DEADLINE
        )
        changed = await tls_world.manage.put_data("/clusters/c1/env/web/workers", 10)
        status, headers, body = await _answer(reader)
        assert (status, json.loads(body), int(headers["x-metad-version"])) == (200, "10", changed)
        status, _, body = await _answer(reader)
        assert (status, json.loads(body)) == (200, "80")
    finally:
        writer.close()
    await _gate_answers_byte_for_byte_as_aiohttp(tls_world, net, base)


async def test_a_parked_poll_goes_with_its_caller_and_is_answered_at_stop(
    tls_world: TLSWorld, net: Net
) -> None:
    metad = tls_world.metad
    since = metad.mirror.revision
    base = len(metad.mirror.waiters)  # the issuer's own waiter (issuance.GraceRevoker)
    # A caller gone while parked: its waiter goes with it.
    reader, writer = await _connect(tls_world, net, "i-web2", 2)
    writer.write(_get(f"/self/host?wait=true&prev_version={since}"))
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
    writer.close()
    await asyncio.wait_for(metad.mirror.waiters.wait_until(lambda n: n == base), DEADLINE)
    assert not _parked(metad)

    # metad stopping answers what it holds, parked polls included.
    reader, writer = await _connect(tls_world, net, "i-web1", 1)
    try:
        writer.write(_get(f"/self/env?wait=true&prev_version={since}"))
        await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
        assert len(_parked(metad)) == 1
        stopping = asyncio.create_task(metad.stop())
        status, _, body = await _answer(reader)
        assert status == 200 and json.loads(body)["port"] == "80"
        await asyncio.wait_for(stopping, DEADLINE)
    finally:
        writer.close()


async def test_a_parked_poll_is_answered_at_its_wait_timeout(
    tls_world: TLSWorld, store: Store, net: Net
) -> None:
    directory = tls_world.dir
    tls = MetadTLS(directory / "server.crt", directory / "server.key", tls_world.ca_file, issuer=tls_world.ca)
    metad = Metad(store, tls_world.metad.listen_ip, 0, 0, wait_timeout=0.3, tls=tls)
    await metad.start()
    try:
        host, port = metad.instance_url.split("://")[1].rsplit(":", 1)
        context = tls_world.creds["i-web1"].context()
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=context, local_addr=(net.ip(1), 0)
        )
        base = len(metad.mirror.waiters)
        writer.write(_get(f"/self/env/port?wait=true&prev_version={metad.mirror.revision}"))
        await asyncio.wait_for(
            metad.mirror.waiters.wait_until(lambda n: n == base + 1 and bool(_parked(metad))), DEADLINE
        )
        status, _, body = await _answer(reader)
        assert (status, json.loads(body)) == (200, "80")
        parking = _gates(metad).parking
        assert parking is not None and not _parked(metad) and not any(parking.deadlines.values())
        writer.close()
    finally:
        await metad.stop()


async def test_with_parking_off_a_poll_is_held_by_the_http_server(
    tls_world: TLSWorld, store: Store, net: Net
) -> None:
    directory = tls_world.dir
    tls = MetadTLS(directory / "server.crt", directory / "server.key", tls_world.ca_file, issuer=tls_world.ca)
    metad = Metad(store, tls_world.metad.listen_ip, 0, 0, wait_timeout=0.3, tls=tls, park_idle_polls=False)
    await metad.start()
    try:
        assert _gates(metad).parking is None
        host, port = metad.instance_url.split("://")[1].rsplit(":", 1)
        context = tls_world.creds["i-web1"].context()
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=context, local_addr=(net.ip(1), 0)
        )
        base = len(metad.mirror.waiters)
        writer.write(_get(f"/self/env/port?wait=true&prev_version={metad.mirror.revision}"))
        await asyncio.wait_for(metad.mirror.waiters.wait_until(lambda n: n == base + 1), DEADLINE)
        assert not _parked(metad)  # held, but by aiohttp's handler
        status, _, body = await _answer(reader)
        assert (status, json.loads(body)) == (200, "80")
        writer.close()
    finally:
        await metad.stop()


async def test_a_seat_is_kept_for_the_same_poll_and_its_paths_follow_the_links(
    tls_world: TLSWorld, net: Net
) -> None:
    """The next poll of an answered agent is parked on its seat without a parse; a change of its
    links gives it the paths of the clusters linked now, and anything unusual still goes to aiohttp."""
    metad = tls_world.metad
    manage = tls_world.manage
    base = len(metad.mirror.waiters)  # the issuer's own waiter (issuance.GraceRevoker)
    store_hosts = keyspace.section("c2", keyspace.HOSTS)
    version = await manage.delete_data("/clusters/c1/links/store")
    reader, writer = await _connect(tls_world, net, "i-web1", 1)
    try:

        async def parked(target: str) -> Gate:
            writer.write(_get(target))
            # Counted as it is armed, before its gate knows it is parked: the gate is asked after.
            await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
            (gate,) = _parked(metad)
            return gate

        gate = await parked(f"/self?wait=true&prev_version={version}")
        seat = gate.seat
        assert seat is not None and store_hosts not in seat.deps
        version = await manage.put_data("/clusters/c1/env/web/workers", 11)
        status, headers, body = await _answer(reader)
        assert (status, int(headers["x-metad-version"])) == (200, version)
        assert "store" not in json.loads(body).get("links", {})

        # The same poll at the version just answered: the same seat, parked without a parse.
        await parked(f"/self?wait=true&prev_version={version}")
        assert gate.seat is seat and gate.parked is seat
        version = await manage.put_data("/clusters/c1/links/store", "c2")
        status, headers, body = await _answer(reader)
        assert int(headers["x-metad-version"]) == version and "store" in json.loads(body)["links"]

        # Linked now: the next poll's paths are c2's too, and a write there wakes it.
        await parked(f"/self?wait=true&prev_version={version}")
        assert gate.seat is not seat and gate.seat is not None and store_hosts in gate.seat.deps
        version = await manage.put_data("/clusters/c2/hosts/s/i-s1/ip", "10.9.9.9")
        status, headers, body = await _answer(reader)
        assert int(headers["x-metad-version"]) == version
        assert json.loads(body)["links"]["store"]["hosts"]["s"]["i-s1"]["ip"] == "10.9.9.9"

        # Another path, no Accept (metad's text): parsed again, and answered by aiohttp once woken.
        head = f"GET /self/env/workers?wait=true&prev_version={version} HTTP/1.1\r\nHost: m\r\n\r\n"
        writer.write(head.encode())
        await asyncio.wait_for(metad.mirror.waiters.wait_for_count(base + 1), DEADLINE)
        assert gate.parked is not None and gate.parked.form == BY_AIOHTTP
        version = await manage.put_data("/clusters/c1/env/web/workers", 12)
        status, headers, body = await _answer(reader)
        assert (status, body.strip(), headers["content-type"]) == (200, b"12", "text/plain")
        assert int(headers["x-metad-version"]) == version and gate.handler is not None
    finally:
        writer.close()
