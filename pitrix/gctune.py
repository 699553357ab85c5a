"""Garbage-collector settings for pitrix's long-running processes.

CPython's default thresholds (700, 10, 10) suit scripts. A pitrix process holds many objects for
a long time (metad's mirror and its waiters, the simulator's light VMs, pitrixd's cluster models)
while asyncio keeps making objects that live for a few milliseconds, long enough to be promoted:
with the defaults, full collections over the whole heap ran dozens of times a minute, each one
stopping the loop. In the light-mode benchmark (1,000 agents and a metad in one process, 20
rounds) 52 full collections took 17.2 s of a 72.4 s run, up to 571 ms each; with these settings
one took 18 ms, the run took 45.4 s and peak memory was the same (649 vs 647 MiB).

pitrix-metad, pitrixd and the simulator (whose light VMs' agents share its heap) run with these
settings. A lone pitrix-agent keeps CPython's: its heap is small, and in the propagation benchmark
(10 and 100 agent processes on one metad, A/B in one session) the tuning changed nothing beyond
the run-to-run noise.

Cyclic garbage is still collected: young collections come every 50,000 net allocations instead
of 700 (reference counting frees everything else at once, as before), a full one after 100
middle ones, subject to CPython's own rule that a full collection waits until a quarter of the
old generation is new.
"""

from __future__ import annotations

import gc

# Net allocations of container objects between young collections; middle collections per young
# ones; full collections per middle ones.
THRESHOLDS = (50_000, 20, 100)


def for_service() -> None:
    """Tune the collector for a long-running process; call once, when start-up has imported what
    it needs: what exists then (modules, classes, functions) is frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
