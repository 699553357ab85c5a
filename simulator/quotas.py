"""An account's quotas on the simulator's QingCloud face: what RunInstances refuses with 2600.

QingCloud counts an account's instances (and their CPUs and memory) against quotas its console
shows; the simulator has one, on live instances, unlimited until set (``PUT /_sim/quotas``).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.errors import QUOTA_EXCEEDED, ApiError


@dataclass
class Quotas:
    instance: int | None = None  # live (not terminated) instances at once; None: unlimited

    def set_instance(self, value: object) -> None:
        """``value``: a whole number >= 0, or None for no quota; ValueError names the field."""
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError("instance: must be a whole number >= 0, or null for no quota")
        self.instance = value

    def check_instances(self, live: int, wanted: int) -> None:
        if self.instance is not None and live + wanted > self.instance:
            raise ApiError(
                QUOTA_EXCEEDED,
                f"QuotaExceeded, quota [instance] is [{self.instance}]: "
                f"[{live}] in use, [{wanted}] more asked",
            )
