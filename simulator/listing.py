"""How the simulator's Describe calls filter their records, as QingCloud's do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

R = TypeVar("R")

# Records in these states are listed only when a request asks for them by status.
GONE = ("deleted", "ceased")


def newest_matching(
    records: Iterable[R],
    *,
    ids: list[str],
    statuses: list[str],
    word: str,
    fields: Callable[[R], tuple[str, str, str]],
) -> list[R]:
    """The records matching the ids, statuses and search word given (each filter only when given),
    newest first. ``fields`` gives a record's id, name and status."""
    wanted = set(ids)
    word = word.lower()
    chosen: list[R] = []
    for record in reversed(list(records)):
        record_id, name, status = fields(record)
        if (
            (not wanted or record_id in wanted)
            and (status in statuses if statuses else status not in GONE)
            and (not word or word in record_id.lower() or word in name.lower())
        ):
            chosen.append(record)
    return chosen
