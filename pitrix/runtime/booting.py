"""Waiting for instances to run, through failed boots.

A boot can fail on any cloud: the instance ends up stopped (its disk kept) rather than running. Its
deterministic name means a retried step finds the same instance again, so waiting must do what an
operator would: start the stopped instance and wait again, a bounded number of times.
"""

from __future__ import annotations

from pitrix.logs import get_logger
from pitrix.providers.base import Instance, Provider, ProviderError

BOOT_ATTEMPTS = 5


async def wait_booted(provider: Provider, instance_ids: list[str], timeout: float) -> list[Instance]:
    """Until every instance runs, starting again those whose boot failed (stopped)."""
    log = get_logger("pitrix.booting")
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            return await provider.wait_running(instance_ids, timeout=timeout)
        except ProviderError as exc:
            current = await provider.describe_instances(instance_ids=instance_ids)
            stopped = [i.instance_id for i in current if i.status == "stopped"]
            if not stopped or attempt == BOOT_ATTEMPTS:
                raise
            log.warning("boot failed; starting again", instance_ids=stopped, attempt=attempt, error=str(exc))
            await provider.start_instances(stopped)
    raise AssertionError("unreachable: the last attempt returns or raises")
