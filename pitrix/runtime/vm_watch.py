"""Whether a metadata VM still runs, asked of the cloud now and then while a step waits on its metad.

A VM that stopped (its boot failed, its metad could not listen) is noticed in seconds, not at the
waiting step's 120 s deadline; and whatever answers at its address meanwhile (an address another
simulator also handed out) is not waited on. Used by every step that waits on a member's metad:
member 0's issuer bootstrap, the members' peer hand-over and the wait for them to answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

# How often the cloud is asked whether the VM a step waits on still runs.
VM_LOOK_EVERY = 5.0
HALTED = ("stopped", "suspended")


class VmHalted(Exception):
    """A metadata VM stopped or went away while a step waited on its metad: the step fails now,
    and the next ensure finds the VM by name and starts it again (or makes it anew)."""


class VmWatch:
    """Looks at one VM at most every :data:`VM_LOOK_EVERY` seconds of a wait.

    ``look`` says why the VM can no longer answer ("its VM i-... is stopped") or "" (running, or the
    cloud did not answer this time: no reason to fail); ``what`` names the VM and the wait.
    """

    def __init__(self, look: Callable[[], Awaitable[str]], what: str) -> None:
        self._look = look
        self._what = what
        self._look_at = time.monotonic() + VM_LOOK_EVERY

    async def still_running(self, waiting: object) -> None:
        """Raise :class:`VmHalted` if it is time to look and the VM no longer runs; ``waiting`` is
        what the wait last saw (quoted in the error)."""
        if time.monotonic() < self._look_at:
            return
        self._look_at = time.monotonic() + VM_LOOK_EVERY
        halted = await self._look()
        if halted:
            raise VmHalted(f"{self._what}: {halted} ({waiting})")
