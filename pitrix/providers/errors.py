"""What a failed cloud call says about trying again: the one retry vocabulary of pitrix.

Every provider maps its cloud's errors onto :class:`Failure`; the layers that retry decide from it,
and only from it (see docs/internals.md, "Retries"):

- the provider repeats a call in place when the call can be repeated as it is: the failure is
  ``NOTHING_DONE`` (throttled, or the cloud was never reached), or it is ``TRANSIENT`` and the call
  is idempotent. When it gives up after retrying, it marks the error ``exhausted``;
- the step executor re-runs a step (which looks before it acts) for a ``TRANSIENT`` or
  ``NOTHING_DONE`` error that no provider retried: an ambiguous failure of a call that cannot be
  repeated blindly (a create without a client token), or a wait that ran out of time;
- a ``TERMINAL`` error is retried by nobody.

So each failure is retried by one layer only, and a failing call is made at most as many times as
the one layer that retries it allows, never the product of both.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    """Whether trying again may help, and whether the cloud may have acted."""

    TERMINAL = "terminal"  # it cannot: bad request, quota, not found, refused credentials
    TRANSIENT = "transient"  # it may (server trouble, lost answer, timeout); the cloud may have acted
    NOTHING_DONE = "nothing-done"  # it may, and the cloud certainly did not act: throttled, never reached

    @property
    def transient(self) -> bool:
        return self is not Failure.TERMINAL

    def repeatable(self, *, idempotent: bool) -> bool:
        """Whether the same call may be sent again as it is after this failure."""
        return self is Failure.NOTHING_DONE or (self is Failure.TRANSIENT and idempotent)


class ProviderError(Exception):
    """A cloud call failed; ``failure`` classifies it, ``exhausted`` says a provider already retried it."""

    def __init__(
        self, message: str, *, code: str = "", failure: Failure = Failure.TERMINAL, exhausted: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.failure = failure
        self.exhausted = exhausted

    @property
    def transient(self) -> bool:
        """Whether trying again may help (the classification alone, retried or not)."""
        return self.failure.transient
