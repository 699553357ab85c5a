"""The delays every retry loop waits: doubling to a cap, each drawn from half to all of it."""

from __future__ import annotations

import pytest

from pitrix.backoff import Backoff


def test_delays_double_to_the_cap_within_their_jitter() -> None:
    backoff = Backoff(0.5, 5.0)
    for full in [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]:
        assert full / 2 <= backoff.next() <= full
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5


def test_callers_failing_together_come_back_apart() -> None:
    # A thousand agents losing metad at the same instant must not retry in the same instant.
    first = [Backoff(0.5, 5.0).next() for _ in range(1000)]
    assert len(set(first)) > 900
    assert min(first) < 0.3 and max(first) > 0.45


def test_a_slower_factor() -> None:
    backoff = Backoff(1.0, 10.0, factor=1.5)
    backoff.next()
    assert 0.75 <= backoff.next() <= 1.5


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_is_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first, cap)
