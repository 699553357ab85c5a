"""Tables a terminal can read: columns as wide as their widest cell, and ages as people say them."""

from __future__ import annotations

import time
from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, each as wide as its widest cell (a long name moves
    its column, it does not push one row out of line); the last column is not padded."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def age(since: float | None, now: float | None = None) -> str:
    """How long ago ``since`` (epoch seconds) was, in the largest unit that fits: 45s, 12m, 3h, 5d."""
    if since is None:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(at: float | None) -> str:
    """An event's or step's time of day in UTC, to the second (events carry epoch seconds)."""
    if at is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(at))
