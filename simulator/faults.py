"""Injected faults: the bad days of a cloud, on demand, for tests and chaos runs.

Three kinds live here, all consulted by the simulator itself (no mocks):

- one-shot API faults: refuse the next ``times`` calls of an action with a given ret_code;
- API fault *rates*: each call of an action fails with a probability, as a throttle (1500) or as
  a server error (5000 by default);
- boot faults: a boot delay drawn uniformly from ``[min, max]`` seconds, and a boot failure
  probability (the boot's job fails, as on a bad host).

Faults on one VM (crash, slow commands, metadata cut) act on the VM and live in
:class:`simulator.fleet.Fleet`. Random draws come from one ``random.Random`` that a seed can fix,
so a chaos run can be replayed.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

THROTTLED = 1500
SERVER_ERROR = 5000


@dataclass
class Fault:
    action: str  # "*" for every action
    ret_code: int
    message: str
    remaining: int


@dataclass(frozen=True)
class Rates:
    """Per-call probabilities for one action (or "*")."""

    error: float = 0.0
    throttle: float = 0.0
    ret_code: int = SERVER_ERROR


@dataclass(frozen=True)
class BootFaults:
    delay_min: float = 0.0
    delay_max: float = 0.0
    failure_rate: float = 0.0
    # This many boots fail for certain before the rate applies: a short run still meets a failure.
    fail_next: int = 0


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be a probability between 0 and 1, got {value}")
    return float(value)


def _message(ret_code: int) -> str:
    if ret_code == THROTTLED:
        return "request throttled, too many requests"
    if ret_code >= SERVER_ERROR:
        return "ServerBusy, injected server error, please try again later"
    return "injected fault"


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._queue: list[Fault] = []
        self._rates: dict[str, Rates] = {}
        self.boot = BootFaults()
        self.random = random.Random(seed)

    def seed(self, seed: int) -> None:
        self.random.seed(seed)

    def inject(self, action: str, ret_code: int = THROTTLED, *, times: int = 1, message: str = "") -> None:
        if times < 1:
            raise ValueError("times: must be at least 1")
        self._queue.append(Fault(action, ret_code, message or _message(ret_code), times))

    def set_rates(
        self, action: str, *, error: float = 0.0, throttle: float = 0.0, ret_code: int = SERVER_ERROR
    ) -> None:
        """Make each call of ``action`` ("*": any) fail with these probabilities; zeros remove them."""
        if not action:
            raise ValueError("action: a QingCloud action name or '*' is required")
        rates = Rates(_probability("error", error), _probability("throttle", throttle), ret_code)
        if rates.error + rates.throttle > 1.0:
            raise ValueError("error + throttle: together must not exceed 1")
        if rates.error == 0.0 and rates.throttle == 0.0:
            self._rates.pop(action, None)
        else:
            self._rates[action] = rates

    def set_boot(
        self,
        *,
        delay_min: float = 0.0,
        delay_max: float = 0.0,
        failure_rate: float = 0.0,
        fail_next: int = 0,
    ) -> None:
        if delay_min < 0 or delay_max < delay_min:
            raise ValueError(f"delay: need 0 <= min <= max, got min={delay_min} max={delay_max}")
        if fail_next < 0 or int(fail_next) != fail_next:
            raise ValueError(f"fail_next: must be a whole number of boots >= 0, got {fail_next}")
        self.boot = BootFaults(
            delay_min, delay_max, _probability("failure_rate", failure_rate), int(fail_next)
        )

    def take(self, action: str) -> Fault | None:
        """The fault that applies to this call, if any (consumes one one-shot occurrence)."""
        for fault in self._queue:
            if fault.action in (action, "*"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._queue.remove(fault)
                return fault
        rates = self._rates.get(action) or self._rates.get("*")
        if rates is None:
            return None
        roll = self.random.random()
        if roll < rates.throttle:
            return Fault(action, THROTTLED, _message(THROTTLED), 0)
        if roll < rates.throttle + rates.error:
            return Fault(action, rates.ret_code, _message(rates.ret_code), 0)
        return None

    def boot_delay(self) -> float:
        boot = self.boot
        if boot.delay_max <= 0:
            return 0.0
        return self.random.uniform(boot.delay_min, boot.delay_max)

    def boot_fails(self) -> bool:
        boot = self.boot
        if boot.fail_next > 0:
            self.boot = dataclasses.replace(boot, fail_next=boot.fail_next - 1)
            return True
        return boot.failure_rate > 0 and self.random.random() < boot.failure_rate

    def describe(self) -> dict[str, object]:
        return {
            "queued": [
                {"action": f.action, "ret_code": f.ret_code, "times": f.remaining} for f in self._queue
            ],
            "rates": {
                a: {"error": r.error, "throttle": r.throttle, "ret_code": r.ret_code}
                for a, r in self._rates.items()
            },
            "boot": {
                "delay_min": self.boot.delay_min,
                "delay_max": self.boot.delay_max,
                "failure_rate": self.boot.failure_rate,
                "fail_next": self.boot.fail_next,
            },
        }

    def clear(self) -> None:
        self._queue.clear()
        self._rates.clear()
        self.boot = BootFaults()
