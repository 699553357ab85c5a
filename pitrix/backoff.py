"""How long every retry loop in pitrix waits: doubling from a first delay up to a cap, jittered.

Jittered because the callers fail together: a metad restart drops a thousand agents' long-polls
in the same millisecond, an etcd restart breaks every watch of a process at once, a throttled
cloud refuses a whole layer of steps. With plain doubling they all come back in step, at 0.5 s,
1 s, 2 s..., each time as one burst the recovering server meets with errors. Each delay is drawn
from half to all of the doubled one ("equal jitter"): spread out, yet never much shorter than
the doubling asks for, so a caller never hammers a server that is still down.
"""

from __future__ import annotations

import random


def jittered(delay: float) -> float:
    """``delay`` drawn from half to all of itself."""
    return delay * (0.5 + random.random() / 2)


def after_at_least(delay: float) -> float:
    """``delay`` to twice it: for a server that said when to come back (``Retry-After``), never
    sooner than it asked, and not all at once with the others it told the same."""
    return delay * (1 + random.random())


class Backoff:
    """The delays of one retry loop; ``reset()`` after a success starts the doubling again."""

    def __init__(self, first: float, cap: float, *, factor: float = 2.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff: need 0 < first <= cap, got first={first}, cap={cap}")
        self.first = first
        self.cap = cap
        self.factor = factor
        self._next = first

    def next(self) -> float:
        """The delay to wait now, in seconds; the one after it is longer, up to the cap."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        return jittered(delay)

    def reset(self) -> None:
        self._next = self.first
