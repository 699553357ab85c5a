"""Injected API faults: refuse the next calls of an action with a given ret_code.

Tests use it to prove a client's retries against the same simulator that serves everything else,
rather than against a mock.
"""

from __future__ import annotations

from dataclasses import dataclass

THROTTLED = 1500


@dataclass
class Fault:
    action: str  # "*" for every action
    ret_code: int
    message: str
    remaining: int


class Faults:
    def __init__(self) -> None:
        self._queue: list[Fault] = []

    def inject(self, action: str, ret_code: int = THROTTLED, *, times: int = 1, message: str = "") -> None:
        if times < 1:
            raise ValueError("times: must be at least 1")
        text = message or (
            "request throttled, too many requests" if ret_code == THROTTLED else "injected fault"
        )
        self._queue.append(Fault(action, ret_code, text, times))

    def take(self, action: str) -> Fault | None:
        """The fault that applies to this call, if any (consumes one occurrence)."""
        for fault in self._queue:
            if fault.action in (action, "*"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._queue.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._queue.clear()
