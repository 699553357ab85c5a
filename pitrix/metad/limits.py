"""How many connections metad holds, and for whom: the accounting behind ``pitrix.metad.gate``.

A connection is *unidentified* from accept until it proves who it is (a verified client
certificate, or in the legacy model a mapped source address); only then is it *known*. Peers
nobody vouches for must not be able to take what agents need, so:

- unidentified connections are capped per source address and in all (``max_unidentified``); when
  the pool is full, the oldest unidentified one makes room for the newcomer (an agent's fresh
  connection is unidentified for its handshake's few milliseconds, and must not be locked out by
  a flood from many addresses);
- every connection counts against ``max_connections``, sized below the process's descriptor
  limit, so accept() never meets EMFILE; the difference between the two caps is the room only
  known identities can use;
- a known identity holds at most ``max_per_identity`` (the runtime's management certificate and
  trusted proxies, which speak for many, are exempt).

Pure bookkeeping, no I/O: the gate asks and acts.
"""

from __future__ import annotations

import resource
from collections import Counter
from dataclasses import dataclass, fields
from typing import Protocol

# Seconds a long-poll is held before it is answered with the current value (``--wait-timeout``);
# here rather than in ``server`` so that ``pitrix-metad --help`` can show it without importing aiohttp.
DEFAULT_WAIT_TIMEOUT = 60.0
# Descriptors metad needs beside its connections: etcd client connections, the embedded etcd's
# pipes, logs, TLS files read at renewal, the event loop's own.
RESERVED_DESCRIPTORS = 256
# What an unidentified connection's one request may take once its headers are in (a bootstrap
# signs a certificate and writes nothing; a healthz answers from memory).
UNIDENTIFIED_REQUEST_BUDGET = 30.0


class LimitsError(ValueError):
    """A limit is out of range; ``field`` names it as the flag does."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """metad's connection hygiene (each a ``pitrix-metad`` flag of the same name).

    The defaults serve 10,000 instances (two keep-alive connections each, docs/internals.md) with
    room to spare, and keep ``max_connections`` + ``RESERVED_DESCRIPTORS`` under the units'
    ``LimitNOFILE=32768``.
    """

    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 24576
    max_unidentified: int = 2048
    max_unidentified_per_source: int = 128
    max_per_identity: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            name = "--" + f.name.replace("_", "-")
            if f.name.endswith("_timeout"):
                if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                    raise LimitsError(name, f"{value!r} must be a positive number of seconds")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LimitsError(name, f"{value!r} must be a positive integer")
        if self.max_unidentified >= self.max_connections:
            raise LimitsError(
                "--max-unidentified",
                f"{self.max_unidentified} must be below --max-connections ({self.max_connections}): "
                "the difference is the room kept for known identities",
            )
        if self.max_unidentified_per_source > self.max_unidentified:
            raise LimitsError(
                "--max-unidentified-per-source",
                f"{self.max_unidentified_per_source} must not exceed "
                f"--max-unidentified ({self.max_unidentified})",
            )

    def fitted(self, descriptors: int) -> ConnectionLimits:
        """These limits, with ``max_connections`` lowered to what ``descriptors`` allows.

        The unidentified pool shrinks in proportion, so known identities keep their share.
        """
        room = descriptors - RESERVED_DESCRIPTORS
        if room >= self.max_connections:
            return self
        if room < 2:
            raise LimitsError(
                "--max-connections",
                f"the descriptor limit ({descriptors}) leaves no room for connections; raise LimitNOFILE",
            )
        unidentified = max(
            1, min(self.max_unidentified, room * self.max_unidentified // self.max_connections)
        )
        unidentified = min(unidentified, room - 1)
        return ConnectionLimits(
            handshake_timeout=self.handshake_timeout,
            header_timeout=self.header_timeout,
            idle_timeout=self.idle_timeout,
            max_connections=room,
            max_unidentified=unidentified,
            max_unidentified_per_source=min(self.max_unidentified_per_source, unidentified),
            max_per_identity=self.max_per_identity,
        )


def raise_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit).

    Returns the soft limit now in force. An unprivileged process may always go up to its hard
    limit; systemd's ``LimitNOFILE`` sets both.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Tracked(Protocol):
    """What the accounting needs to know of a connection."""

    source: str
    identity: str | None

    def evict(self) -> None:
        """Close the connection to make room (it then calls ``Admission.release``)."""


class Admission:
    """The counts of one metad's connections over all its ports."""

    def __init__(self, limits: ConnectionLimits, exempt_sources: frozenset[str] = frozenset()) -> None:
        self.limits = limits
        # Sources that speak for many instances (trusted proxies): no per-source cap.
        self.exempt_sources = exempt_sources
        # Insertion-ordered: the first is the oldest, the one evicted when the pool is full.
        self._unidentified: dict[Tracked, None] = {}
        self._known: set[Tracked] = set()
        self._per_source: Counter[str] = Counter()
        self._per_identity: Counter[str] = Counter()
        self.refused = 0
        self.evicted = 0

    @property
    def total(self) -> int:
        return len(self._unidentified) + len(self._known)

    @property
    def unidentified(self) -> int:
        return len(self._unidentified)

    @property
    def known(self) -> int:
        return len(self._known)

    def admit(self, conn: Tracked) -> bool:
        """Count a just-accepted connection as unidentified; False: refuse it (nothing counted)."""
        limits = self.limits
        source = conn.source
        if (
            source not in self.exempt_sources
            and self._per_source[source] >= limits.max_unidentified_per_source
        ):
            self.refused += 1
            return False
        if len(self._unidentified) >= limits.max_unidentified or self.total >= limits.max_connections:
            if not self._unidentified:
                self.refused += 1
                return False  # every slot is a known identity's: capacity, not an attack
            oldest = next(iter(self._unidentified))
            self.evicted += 1
            self._forget(oldest)
            oldest.evict()
        self._unidentified[conn] = None
        self._per_source[source] += 1
        return True

    def identify(self, conn: Tracked, identity: str, *, exempt: bool = False) -> bool:
        """Move ``conn`` to the known pool as ``identity``; False if that identity holds its share."""
        if conn not in self._unidentified:
            return False
        if not exempt and self._per_identity[identity] >= self.limits.max_per_identity:
            return False
        self._forget(conn)
        conn.identity = identity
        self._known.add(conn)
        self._per_identity[identity] += 1
        return True

    def release(self, conn: Tracked) -> None:
        """The connection is gone (idempotent)."""
        self._forget(conn)

    def _forget(self, conn: Tracked) -> None:
        if conn in self._unidentified:
            del self._unidentified[conn]
            self._per_source[conn.source] -= 1
            if self._per_source[conn.source] <= 0:
                del self._per_source[conn.source]
        elif conn in self._known:
            self._known.discard(conn)
            assert conn.identity is not None
            self._per_identity[conn.identity] -= 1
            if self._per_identity[conn.identity] <= 0:
                del self._per_identity[conn.identity]

    def snapshot(self) -> dict[str, int]:
        """Counts for /healthz and logs."""
        return {
            "connections": self.total,
            "unidentified": self.unidentified,
            "known": self.known,
            "refused": self.refused,
            "evicted": self.evicted,
        }
