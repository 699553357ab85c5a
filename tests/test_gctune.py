"""Every pitrix process's loop runs with the collector tuned for a long-running process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from pitrix.gctune import THRESHOLDS

PROBE = """
import gc, json, sys
from pitrix import aio

async def main():
    return {"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}

print(json.dumps(aio.run(main(), tune_gc=sys.argv[1] == "tuned")))
"""


def probe(mode: str) -> dict[str, Any]:
    # A process of its own: the settings are process-wide, and pytest's must stay as they are.
    argv = [sys.executable, "-c", PROBE, mode]
    seen: dict[str, Any] = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return seen


def test_a_process_run_by_aio_has_the_collector_tuned() -> None:
    seen = probe("tuned")
    assert tuple(seen["thresholds"]) == THRESHOLDS
    assert seen["frozen"] > 10_000  # what start-up imported is out of every collection


def test_a_process_may_keep_cpython_s_settings() -> None:
    seen = probe("default")
    assert tuple(seen["thresholds"]) == (700, 10, 10) and seen["frozen"] == 0
