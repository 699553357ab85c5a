"""Plans are data: ordered layers of named, idempotent steps.

Steps in one layer run concurrently; a layer starts when the one before it has finished. A step
must be safe to run again after a crash (it looks before it acts), because the journal only knows
that it started, not how far it got.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

StepFn = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn
    timeout: float = 600.0


@dataclass
class Plan:
    action: str
    layers: list[list[Step]] = field(default_factory=list)

    def then(self, *steps: Step) -> Plan:
        """Append a layer of steps that run together."""
        if steps:
            self.layers.append(list(steps))
        return self

    @property
    def steps(self) -> list[Step]:
        return [step for layer in self.layers for step in layer]

    def describe(self) -> list[list[str]]:
        return [[step.name for step in layer] for layer in self.layers]


def step(name: str, timeout: float = 600.0) -> Callable[[StepFn], Step]:
    """Decorator turning an async function into a named step."""

    def wrap(fn: StepFn) -> Step:
        return Step(name, fn, timeout)

    return wrap


def as_step(name: str, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 600.0) -> Step:
    """A step calling ``fn(*args)``."""

    async def run() -> str | None:
        result = await fn(*args)
        return result if isinstance(result, str) else None

    return Step(name, run, timeout)
