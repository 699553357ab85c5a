"""When a failed step runs again: a transient cloud error that no provider retried, within bounds.

The decision is the providers' classification (:mod:`pitrix.providers.errors`), nothing else. A
provider repeats a call itself when the call can be sent again as it is; what it cannot repeat (a
create without a client token whose answer was lost or was "busy") or what a wait ran out of time
for is left to the step: steps are idempotent (they look before they act), so re-running one is
safe. An error the provider already retried until it gave up is not retried here once more, so
one failure is never retried by both layers (no 5 x 5). Anything else a step raises is a real
failure and ends the plan at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pitrix.backoff import jittered
from pitrix.providers.base import ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a step is re-run after a transient cloud error.

    ``attempts`` counts the first run; the delay doubles from ``first_delay`` up to ``max_delay``
    and is jittered (half to all of it) so that the steps of a layer, refused together, do not
    come back together. The step's own timeout still bounds all its attempts together.
    """

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts: at least 1 (the first run)")
        if self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError("first_delay, max_delay: 0 <= first_delay <= max_delay")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        full = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return jittered(full)

    def again(self, error: BaseException, attempt: int) -> ProviderError | None:
        """The cloud error behind ``error`` if it is the step's to retry and an attempt is left."""
        if attempt >= self.attempts:
            return None
        return retryable_cause(error)


def retryable_cause(error: BaseException) -> ProviderError | None:
    """The ``ProviderError`` that is ``error`` or what caused it (steps may wrap it), when it is
    transient and no provider has retried it already."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ProviderError):
            return current if current.transient and not current.exhausted else None
        current = current.__cause__ or current.__context__
    return None
