"""Long-polls held at their connection's gate, before aiohttp makes a request of them.

An idle agent's ``GET /self?wait=true`` used to be held inside aiohttp: a parsed message, its
headers, a request, a match, a task and four coroutine frames, ~4 KiB on top of OpenSSL's own
~37 KiB per connection, for as long as nothing changes (bench/metad_idle). metad's gate sees the
request's bytes first: when they are exactly one plain long-poll whose view has not changed since
``prev_version``, :class:`Parking` keeps the bytes and a waiter instead (a few hundred bytes), and
aiohttp is not even given a handler for a connection whose first request is parked. A wake-up (a
change, the wait timeout, metad stopping) hands the kept bytes to aiohttp, marked as waited for:
the instance API then answers them as it would have answered the held request, without waiting
again. Anything else (a body, a percent-escaped path or query, a request in pieces, the legacy
source-address identity, a caller it cannot identify) goes to aiohttp as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Protocol

from pitrix.metad import render, selfview
from pitrix.metad.identity import Caller, CertificateIdentity, Refused
from pitrix.metad.instance_api import parked_answer, parked_headers
from pitrix.metad.mirror import Mirror
from pitrix.metad.tree import split_path
from pitrix.metad.waiters import Waiter

# Headers that give a request a body or another protocol: such a request is aiohttp's to read.
_BODY_HEADERS = (b"content-length", b"transfer-encoding", b"upgrade", b"expect")
_TRUE = ("true", "1", "yes")


class Parkable(Protocol):
    """The gate's side: where the transport is, its parked poll, and what to call once the poll is
    woken (``wake``: aiohttp answers it; ``answer``: the gate writes the answer given)."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    parked: Seat | None
    seat: Seat | None

    def wake(self) -> None: ...

    def answer(self, data: bytes) -> None: ...


def poll_target(data: bytes) -> tuple[str, dict[str, str]] | None:
    """(path, query) of ``data`` when it is exactly one complete ``GET`` head with no body and no
    escapes, else None: what a parked poll must be to be answered the same once aiohttp parses it."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data) or not data.startswith(b"GET /"):
        return None
    lines = data[:end].split(b"\r\n")
    words = lines[0].split(b" ")
    if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    for line in lines[1:]:
        name, colon, _ = line.partition(b":")
        if not colon or name.strip().lower() in _BODY_HEADERS:
            return None
    try:
        target = words[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c in target for c in "%+;#\\") or not target.isprintable():
        return None
    path, _, raw_query = target.partition("?")
    if "/." in path or "//" in path:
        return None  # the instance API redirects such a path to its clean form
    query: dict[str, str] = {}
    for item in raw_query.split("&"):
        if item:
            key, _, value = item.partition("=")
            query.setdefault(key, value)  # the first value wins, as request.query.get answers
    return path, query


# How a parked poll is answered: by aiohttp, or by the gate itself with the JSON of the caller's
# whole view (``/self``, or ``/`` wrapped in ``{"self": ...}``): what every agent asks for.
BY_AIOHTTP, SELF_VIEW, ROOT_VIEW = 0, 1, 2


def answer_form(data: bytes, path: str, query: dict[str, str]) -> int:
    """How the poll ``data`` (a :func:`poll_target`) is answered once woken: by the gate itself only
    where the bytes aiohttp would send are known (render.json_bytes): HTTP/1.1 kept alive (no
    ``Connection`` header), one ``Accept: application/json``, not ``pretty``, the whole view."""
    parts = split_path(path)
    if parts and parts != ["self"]:
        return BY_AIOHTTP
    if query.get("pretty", "false") not in ("", "false"):
        return BY_AIOHTTP
    lines = data[: data.find(b"\r\n\r\n")].split(b"\r\n")
    if not lines[0].endswith(b" HTTP/1.1"):
        return BY_AIOHTTP
    accept = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"connection":
            return BY_AIOHTTP
        if name == b"accept":
            if value.strip() != render.JSON.encode():
                return BY_AIOHTTP
            accept += 1
    if accept != 1:
        return BY_AIOHTTP
    return SELF_VIEW if parts else ROOT_VIEW


_PREV_VERSION = b"prev_version="


def version_span(data: bytes, raw: str | None) -> tuple[int, int] | None:
    """Where, in the poll ``data`` (a :func:`poll_target`), the digits of the ``prev_version`` its
    query was read with are (``raw``: the value read), or None. The same bytes with other digits
    there are the same poll at another version: :meth:`Seat.since` reads them without a parse."""
    if raw is None or not raw.isdigit() or not raw.isascii():
        return None
    end = data.find(b"\r\n")
    at = data.find(_PREV_VERSION, 0, end)
    while at > 0 and data[at - 1 : at] not in (b"?", b"&"):
        at = data.find(_PREV_VERSION, at + 1, end)
    if at <= 0:
        return None
    start = at + len(_PREV_VERSION)
    stop = start + len(raw)
    # The first prev_version of the query (the one read), its digits and nothing more.
    if data[start:stop] != raw.encode() or data[stop : stop + 1] not in (b"&", b" "):
        return None
    return start, stop


# Woken polls handed to aiohttp per turn of the loop (4: the best of 4, 16 and all at once measured): a
# write waking a thousand would otherwise have aiohttp parse all before the first answer goes out.
HANDOFF_BATCH = 4
# Woken polls the gate answers itself per turn of the loop: each is a render from the role's shared
# sections and one TLS write (~0.1 ms). 64 and 1,024 measured alike within this host's noise (load
# 20-30: 0.82-1.20x and 1.67-1.98x Go metad's median in two runs each); the smaller batch keeps the
# loop free for other requests.
ANSWER_BATCH = 64


# Parked polls' wait timeouts end on the next tick of this many per second: one timer per tick
# in use rather than one per poll (a uvloop timer handle is ~0.5 KiB with its arguments).
TICKS_PER_SECOND = 10


class Seat(Waiter):
    """One connection's place in the waiter index, kept from one parked poll to the next.

    An agent answered by the gate polls again at once with the same path from the same identity:
    its dependency paths are the same, so its seat stays indexed by them between polls (disarmed:
    a change then wakes nothing) and parking the next poll only arms it. A change of its paths (a
    link added, another path asked for) gives the connection a new seat.
    """

    __slots__ = (
        "_parking", "armed", "caller", "digits", "form", "gate", "head", "links_epoch", "queued",
        "tail", "tick", "view",
    )  # fmt: skip

    stays = True

    def __init__(self, parking: Parking, gate: Parkable, deps: tuple[str, ...]) -> None:
        self._parking = parking
        self.gate = gate
        # metad's own paths (selfview's and identity's), spelled as the index spells them already,
        # once each in the order computed: the next poll's are compared with them.
        self.deps = deps
        self.form = BY_AIOHTTP
        self.armed = False
        self.queued = False  # woken, waiting in Parking's queue for its answer
        self.tick = 0
        # What the last poll parked here was, to know the next at a glance (Parking.park): the
        # caller it was identified as, the links epoch its paths were computed at, how many of
        # them are its view's (the rest are the caller's), and its bytes (the gate's held bytes
        # while it is parked: no copy), where prev_version's digits start in them and how many
        # bytes follow the digits (``digits`` 0: no such poll to compare with).
        self.caller: Caller | None = None
        self.links_epoch = -1
        self.view = len(deps)
        self.head = b""
        self.digits = self.tail = 0
        parking.mirror.waiters.register(self)

    def since(self, data: bytes) -> int | None:
        """The version ``data`` asks past, when it is the last poll parked here but for the digits
        of its ``prev_version``; else None."""
        head, start, tail = self.head, self.digits, self.tail
        stop = len(data) - tail
        if not start or stop <= start or not head.startswith(data[:start]) or not head.endswith(data[stop:]):
            return None
        digits = data[start:stop]
        return int(digits) if digits.isdigit() else None

    def arm(self, form: int) -> None:
        """Hold the poll now parked on this seat, answered in ``form`` once woken."""
        self.form = form
        self.armed = True
        parking = self._parking
        parking.mirror.waiters.arm(self)
        self.tick = parking.expire_later(self)

    def wake(self, revision: int) -> bool:
        if not self.armed:
            return False
        self.cancel()
        self.queued = True
        self._parking.hand_off(self)
        return True

    def cancel(self) -> None:
        """Hold nothing (woken, or more bytes came behind the poll); still indexed."""
        if not self.armed:
            return
        self.armed = False
        parking = self._parking
        parking.mirror.waiters.disarm(self)
        bucket = parking.deadlines.get(self.tick)
        if bucket is not None:
            bucket.discard(self)

    def close(self) -> None:
        """Out of the index (the connection went, or its next poll depends on other paths)."""
        self.cancel()
        self._parking.mirror.waiters.unregister(self)


class Parking:
    """Decides, per request head, whether a poll is parked at the gate (and parks it)."""

    def __init__(
        self,
        mirror: Mirror,
        identity: CertificateIdentity,
        wait_timeout: float,
        shared: render.SharedSections | None = None,
    ) -> None:
        self.mirror = mirror
        self.identity = identity
        self.wait_timeout = wait_timeout
        # The instance app's, so a change's shared sections are rendered once for both paths.
        self.shared = shared if shared is not None else render.SharedSections()
        self._woken: deque[Seat] = deque()
        self._draining: asyncio.Handle | None = None
        self.deadlines: dict[int, set[Seat]] = {}
        # The answers' headers, written out once per generation of the mirror's tree.
        self._headers = ("", -1)

    def expire_later(self, parked: Seat) -> int:
        """Wake ``parked`` at the first tick after the wait timeout; returns that tick."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + self.wait_timeout) * TICKS_PER_SECOND)
        bucket = self.deadlines.get(tick)
        if bucket is None:
            bucket = self.deadlines[tick] = set()
            loop.call_at(tick / TICKS_PER_SECOND, self._expire, tick)
        bucket.add(parked)
        return tick

    def _expire(self, tick: int) -> None:
        for parked in list(self.deadlines.pop(tick, ())):
            parked.wake(0)

    def hand_off(self, parked: Seat) -> None:
        """Answer a woken poll, a batch per turn of the loop, so answers start at once."""
        self._woken.append(parked)
        if self._draining is None:
            self._draining = asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._draining = None
        woken = self._woken
        handed = answered = 0
        while woken and handed < HANDOFF_BATCH and answered < ANSWER_BATCH:
            parked = woken.popleft()
            parked.queued = False
            gate = parked.gate
            if gate.parked is not parked:
                continue  # its connection went, or more bytes came behind it (aiohttp has them)
            data = self._answer(parked) if parked.form != BY_AIOHTTP else None
            if data is None:
                gate.wake()
                handed += 1
            else:
                gate.answer(data)
                answered += 1
        if woken:
            self._draining = asyncio.get_running_loop().call_soon(self._drain)

    def _answer(self, parked: Seat) -> bytes | None:
        """The answer's bytes, or None for aiohttp to answer (a caller refused now: its 403)."""
        mirror = self.mirror
        try:
            caller = self.identity.identify_transport(parked.gate.transport, mirror)
        except Refused:
            return None
        headers, generation = self._headers
        if generation != mirror.generation:
            headers = parked_headers(mirror)
            self._headers = (headers, mirror.generation)
        return parked_answer(mirror, self.shared, caller.mapping, parked.form == ROOT_VIEW, headers)

    def flush(self) -> None:
        """Hand every woken poll to aiohttp now (metad stopping: the connections not given are
        closed, and aiohttp finishes its answers before it closes its own)."""
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        while self._woken:
            parked = self._woken.popleft()
            parked.queued = False
            if parked.gate.parked is parked:
                parked.gate.wake()

    def park(self, gate: Parkable, data: bytes) -> Seat | None:
        """The seat ``data`` is parked on, or None: aiohttp's to read (and answer, or hold)."""
        seat = gate.seat
        if seat is not None and not seat.queued:
            since = seat.since(data)
            if since is not None:
                # The same poll again at another version (a fan-out's answered agents, at once).
                mirror = self.mirror
                try:
                    caller = self.identity.identify_transport(gate.transport, mirror)
                except Refused:
                    return None  # the instance API answers the refusal
                if caller is seat.caller and seat.links_epoch == mirror.links_epoch:
                    # Asked at the mirror's revision (the usual case): nothing to look at.
                    if since < mirror.revision and mirror.changed_since(list(seat.deps[: seat.view]), since):
                        return None
                    seat.arm(seat.form)
                    return seat
        return self._park(gate, data)

    def _park(self, gate: Parkable, data: bytes) -> Seat | None:
        target = poll_target(data)
        if target is None:
            return None
        path, query = target
        if query.get("wait", "").lower() not in _TRUE or not selfview.addressable(path):
            return None
        mirror = self.mirror
        try:
            caller = self.identity.identify_transport(gate.transport, mirror)
        except Refused:
            return None  # the instance API answers the refusal
        raw = query.get("prev_version", query.get("pre_version"))
        since = mirror.revision
        if raw is not None:
            with contextlib.suppress(ValueError):
                since = int(raw)  # as instance_api._since reads it
        epoch = mirror.links_epoch
        deps = selfview.view_dependencies(mirror.tree, caller.mapping, path)
        if mirror.changed_since(deps, since):
            return None
        view = dict.fromkeys(deps)
        paths = tuple(dict.fromkeys([*view, *caller.dependencies()]))
        seat = gate.seat
        # A seat still queued from its last wake-up is left to that entry (which then skips it).
        if seat is None or seat.queued or seat.deps != paths:
            if seat is not None:
                seat.close()
            seat = gate.seat = Seat(self, gate, paths)
        seat.caller, seat.links_epoch, seat.view = caller, epoch, len(view)
        span = version_span(data, query.get("prev_version"))
        if span is None:
            seat.head, seat.digits, seat.tail = b"", 0, 0
        else:
            seat.head, seat.digits, seat.tail = data, span[0], len(data) - span[1]
        seat.arm(answer_form(data, path, query))
        return seat


__all__ = ["Parking", "Seat", "answer_form", "poll_target", "version_span"]
