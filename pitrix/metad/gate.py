"""The door of metad's ports: every connection is admitted, timed and identified here first.

aiohttp's own server sees a TLS connection only once its handshake is done, and asyncio's
accept loop has no say on who gets in: a flood of bare TCP connects, or of handshakes that never
send a request, held descriptors for as long as it liked. So metad accepts itself
(:class:`Listener`): each accepted socket is admitted or reset before any transport exists (the
per-source and pool caps of ``pitrix.metad.limits``: a few dictionary lookups), then made a
transport by the loop (``connect_accepted_socket``, uvloop's TLS included, under the handshake
timeout); its :class:`Gate` learns who the peer is and only then hands the connection to
aiohttp's request handler, relaying its events.

Timers: a connection must complete its first request's headers within ``header_timeout``; after
that aiohttp's keep-alive timeout (``idle_timeout``) closes it between requests, never while a
request (an agent's long-poll) is held. An unidentified connection serves one request, within
``UNIDENTIFIED_REQUEST_BUDGET``, and is closed: the instance API refuses all but a bootstrap and
``/healthz`` to it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from pitrix.logs import module_logger
from pitrix.metad.limits import UNIDENTIFIED_REQUEST_BUDGET, Admission

if TYPE_CHECKING:
    from pitrix.metad.parking import Parking, Seat

_log = module_logger("pitrix.metad.gate")

# An identity decided for a connection: (key, exempt from the per-identity cap), or None.
Decision = tuple[str, bool] | None
# TLS ports: the verified client certificate of the handshaked transport decides.
TLSClassifier = Callable[[asyncio.BaseTransport], Decision]
# Plain ports (legacy model): the source address decides, as soon as the transport exists.
PlainClassifier = Callable[[str], Decision]

GATES_KEY: web.AppKey[Gates] = web.AppKey("gates")
# Sockets accepted per readiness callback before other work gets its turn.
ACCEPT_BATCH = 64


class Gates:
    """Every connection of one port, and the request hook its app's middleware calls."""

    def __init__(
        self,
        admission: Admission,
        handler_factory: Callable[[], asyncio.Protocol] | None,
        ssl_context: ssl.SSLContext | None,
        classify_tls: TLSClassifier,
        classify_plain: PlainClassifier,
        parking: Parking | None = None,
    ) -> None:
        self.admission = admission
        # The instance port's: identified connections' long-polls held here (pitrix.metad.parking),
        # and aiohttp's handler made only once a request must be given to it.
        self.parking = parking
        self.handler_factory = handler_factory
        self.ssl_context = ssl_context
        self.classify_tls = classify_tls
        self.classify_plain = classify_plain
        self.open: set[Gate] = set()
        # Keep-alive deadlines of connections between answers the gate wrote itself.
        self.idle = IdleTicks()
        # The transport aiohttp's handler was given → its gate (for the request hook).
        self.by_transport: dict[asyncio.BaseTransport, Gate] = {}

    def accepted(self, conn: socket.socket, source: str) -> None:
        """A socket just accepted: refused at once (a reset, no transport made) or opened."""
        gate = Gate(self, source)
        if not self.admission.admit(gate):
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            conn.close()
            return
        self.open.add(gate)
        conn.setblocking(False)
        gate.opening = asyncio.get_running_loop().create_task(self._open(gate, conn))

    async def _open(self, gate: Gate, conn: socket.socket) -> None:
        """Make the connection's transport: the TLS handshake, under its timeout, happens here."""
        loop = asyncio.get_running_loop()
        try:
            if self.ssl_context is None:
                await loop.connect_accepted_socket(lambda: gate, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: gate,
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.admission.limits.handshake_timeout,
                )
        except BaseException as exc:
            # The loop's transport owns the socket now and has closed it (both loops do): closing
            # it here too could close a descriptor number already reused by the next accept.
            gate.opening = None
            gate.release()
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not isinstance(exc, OSError | ssl.SSLError | EOFError | TimeoutError):
                _log.warning("connection setup failed", peer=gate.source, error=repr(exc))
            return
        gate.opening = None

    def close_pending(self) -> None:
        """Close the connections aiohttp has not been given yet (still in their handshake, or with
        no request yet: metad's stop wakes and hands over every parked poll before this)."""
        for gate in list(self.open):
            if gate.handler is None:
                gate.evict()


# SO_LINGER on, timeout 0: close() sends a reset and keeps no TIME_WAIT for a refused peer.
_RESET = struct.pack("ii", 1, 0)


# Keep-alive deadlines after a gate's own answer end on the next tick of this many per second.
IDLE_TICKS_PER_SECOND = 10


class IdleTicks:
    """Connections' keep-alive deadlines by tick: one loop timer per tick in use, not one per answer.

    A fan-out's gate answers a thousand parked polls and each connection's next poll stops its
    keep-alive again at once; a uvloop timer started and stopped per answer was ~1.3 µs of it, a
    set's add and discard ~0.2 (pitrix.metad.parking ends parked polls' wait timeouts the same way).
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[int, set[Gate]] = {}

    def add(self, gate: Gate, delay: float) -> int:
        """Expire ``gate`` at the first tick ``delay`` seconds from now; returns that tick."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + delay) * IDLE_TICKS_PER_SECOND)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            loop.call_at(tick / IDLE_TICKS_PER_SECOND, self._fire, tick)
        bucket.add(gate)
        return tick

    def discard(self, gate: Gate, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.discard(gate)

    def _fire(self, tick: int) -> None:
        for gate in list(self._buckets.pop(tick, ())):
            gate.idle_expired()


class Gate(asyncio.Protocol):
    """One connection: admitted at accept, identified once its transport exists, then relayed."""

    __slots__ = (
        "_gates", "_timer", "handler", "held", "identity", "idle_tick", "opening", "parked",
        "prewaited", "seat", "source", "transport",
    )  # fmt: skip

    def __init__(self, gates: Gates, source: str) -> None:
        self._gates = gates
        self.source = source
        self.identity: str | None = None
        self.transport: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self.opening: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The keep-alive deadline after an answer the gate wrote (Gates.idle), 0 when none.
        self.idle_tick = 0
        # A long-poll parked here: its bytes, its waiter; and whether the request given to aiohttp
        # next was already waited for (pitrix.metad.parking).
        self.parked: Seat | None = None
        self.held = b""
        # Its place in the waiter index, kept between parked polls (pitrix.metad.parking.Seat).
        self.seat: Seat | None = None
        self.prewaited = False

    # -- the transport's side ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # After the handshake, if any. uvloop's transports are not asyncio.Transport subclasses.
        tls = cast(asyncio.Transport, transport)
        self.transport = tls
        gates = self._gates
        if self not in gates.open:  # evicted while its handshake went on
            tls.abort()
            return
        plain = gates.ssl_context is None
        decision = gates.classify_plain(self.source) if plain else gates.classify_tls(tls)
        if decision is not None and not gates.admission.identify(self, decision[0], exempt=decision[1]):
            _log.info("connection refused: identity over its share", peer=self.source, identity=decision[0])
            self.evict()
            return
        assert gates.handler_factory is not None, "the runner's server is not set up"
        gates.by_transport[tls] = self
        self._timer = asyncio.get_running_loop().call_later(
            gates.admission.limits.header_timeout, self._expire, "no request headers in time"
        )
        if decision is None or gates.parking is None:
            self._handler()  # else made once a request is given to aiohttp (its first may be parked)

    def _handler(self) -> asyncio.Protocol:
        """aiohttp's request handler of this connection, made (and given the transport) at first use."""
        handler = self.handler
        if handler is None:
            factory = self._gates.handler_factory
            assert factory is not None and self.transport is not None
            self.handler = handler = factory()
            handler.connection_made(self.transport)
        return handler

    def data_received(self, data: bytes) -> None:
        gates = self._gates
        if self.transport is None or self not in gates.open:
            return
        if self.parked is not None:
            # More bytes behind a parked poll (pipelined): all go to aiohttp in order, the poll held there.
            self.parked.cancel()
            self.parked = None
            data, self.held = self.held + data, b""
        elif gates.parking is not None and self.identity is not None and self._handler_idle():
            parked = gates.parking.park(self, data)
            if parked is not None:
                self.parked, self.held = parked, data
                self._stop_timers()  # its headers are in
                return
        self._handler().data_received(data)

    def _handler_idle(self) -> bool:
        """No handler yet, or aiohttp's between requests: its task awaits the next message, none
        is queued. Its keep-alive timer is stopped then, as it is while a request is held there (it
        starts again after the answer). Private attributes of aiohttp 3.x: where they are missing,
        nothing is parked on a kept-alive connection."""
        handler = self.handler
        if handler is None:
            return True
        waiter = getattr(handler, "_waiter", None)
        messages = getattr(handler, "_messages", None)
        if (
            waiter is None
            or waiter.done()
            or messages is None
            or messages
            or not hasattr(handler, "_keepalive_handle")
        ):
            return False
        keepalive = handler._keepalive_handle
        if keepalive is not None:
            keepalive.cancel()
            handler._keepalive_handle = None
        return True

    def wake(self) -> None:
        """The parked poll's view changed, or its time ran out: aiohttp gets its bytes now, marked
        as waited for (the instance API answers them without holding them again)."""
        self.parked = None
        held, self.held = self.held, b""
        if self.transport is None or self not in self._gates.open:
            return
        self.prewaited = True
        self._handler().data_received(held)

    def answer(self, data: bytes) -> None:
        """The parked poll's view changed, or its time ran out, and parking made its answer: written
        here, aiohttp never parsing the request (nor, for a connection whose every request was a
        parked poll, ever given it). Between requests the keep-alive timeout is this gate's, as it is
        aiohttp's after an answer of its own (its timer stopped when the poll was parked)."""
        self.parked = None
        self.held = b""
        transport = self.transport
        if transport is None or self not in self._gates.open:
            return
        transport.write(data)
        self._stop_timers()
        gates = self._gates
        self.idle_tick = gates.idle.add(self, gates.admission.limits.idle_timeout)

    def _stop_timers(self) -> None:
        """Stop the header, request or keep-alive timer, whichever runs."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.idle_tick:
            self._gates.idle.discard(self, self.idle_tick)
            self.idle_tick = 0

    def idle_expired(self) -> None:
        self.idle_tick = 0
        self._expire("idle between requests")

    def take_prewaited(self) -> bool:
        """Whether the request just started was parked here already (read once)."""
        prewaited, self.prewaited = self.prewaited, False
        return prewaited

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self.handler is not None:
            self.handler.connection_lost(exc)

    # -- metad's side --------------------------------------------------------------------------

    def request_started(self) -> bool:
        """The first (or next) request's headers are in; True when the caller is unidentified."""
        self._stop_timers()
        if self.identity is not None:
            return False
        self._timer = asyncio.get_running_loop().call_later(
            UNIDENTIFIED_REQUEST_BUDGET, self._expire, "unidentified request took too long"
        )
        return True

    def _expire(self, why: str) -> None:
        self._timer = None
        _log.debug("connection closed", reason=why, peer=self.source, identity=self.identity)
        self.evict()

    def evict(self) -> None:
        """Close now (pool full, timer run out, metad stopping)."""
        self.release()
        if self.opening is not None:
            self.opening.cancel()
        elif self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """Uncount the connection (idempotent)."""
        self._stop_timers()
        if self.parked is not None:
            self.parked.cancel()
            self.parked = None
            self.held = b""
        if self.seat is not None:
            self.seat.close()
            self.seat = None
        gates = self._gates
        gates.admission.release(self)
        gates.open.discard(self)
        if self.transport is not None:
            gates.by_transport.pop(self.transport, None)


def request_started(request: web.Request) -> bool:
    """Tell the request's connection's gate its request started (an app without gates: nothing);
    True when the caller is unidentified, whose answer must then close the connection."""
    gates = request.app.get(GATES_KEY)
    transport = request.transport
    gate = gates.by_transport.get(transport) if gates is not None and transport is not None else None
    return gate is not None and gate.request_started()


def prewaited(request: web.Request) -> bool:
    """Whether ``request`` is a long-poll its connection's gate held already (and woke)."""
    gates = request.app.get(GATES_KEY)
    transport = request.transport
    gate = gates.by_transport.get(transport) if gates is not None and transport is not None else None
    return gate is not None and gate.take_prewaited()


@web.middleware
async def gate_hook(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell the connection's gate a request started; an unidentified one's answer closes it.

    The management app's; the instance app's handlers do the same themselves (instance_api.served).
    """
    if not request_started(request):
        return await handler(request)
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.force_close()
        raise
    response.force_close()
    return response


class Listener:
    """Accepts on one listening socket and gives every accepted socket to its :class:`Gates`.

    What ``loop.create_server`` would do, but with the decision before any transport exists:
    a refused peer costs an accept and a close.
    """

    def __init__(self, sock: socket.socket, gates: Gates) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._gates = gates
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory in spite of the caps (another part of the process):
                # stop accepting for a moment rather than spin.
                _log.error("accept failed; pausing for a second", error=str(exc))
                self._loop.remove_reader(self._sock.fileno())
                self._retry = self._loop.call_later(1.0, self._resume)
                return
            self._gates.accepted(conn, str(address[0]))

    def _resume(self) -> None:
        self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


class GatedSite(web.BaseSite):
    """An aiohttp site whose connections go through :class:`Gates` (which does TLS itself)."""

    __slots__ = ("_host", "_port", "gates")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gates: Gates, backlog: int) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=gates.ssl_context)
        self._host, self._port, self.gates = host, port, gates

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(self._backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._server = cast(asyncio.AbstractServer, Listener(sock, self.gates))

    async def stop(self) -> None:
        # Connections still in their handshake are no handler's yet: aiohttp would not close them.
        self.gates.close_pending()
        await super().stop()
