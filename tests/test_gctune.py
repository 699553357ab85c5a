"""Every pitrix process's loop runs with the collector tuned for a long-running process."""

from __future__ import annotations

import json
import subprocess
import sys

from pitrix.gctune import THRESHOLDS

PROBE = """
import gc, json
from pitrix import aio

async def main():
    return {"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}

print(json.dumps(aio.run(main())))
"""


def test_a_process_run_by_aio_has_the_collector_tuned() -> None:
    # A process of its own: the settings are process-wide, and pytest's must stay as they are.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert tuple(seen["thresholds"]) == THRESHOLDS
    assert seen["frozen"] > 10_000  # what start-up imported is out of every collection
