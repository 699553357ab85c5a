"""Reading QingCloud request parameters; each bad value is refused naming its parameter."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

from simulator.errors import invalid

T = TypeVar("T")

_INDEXED = re.compile(r"^(?P<name>[a-z_]+)\.(?P<index>[1-9][0-9]*)$")


def indexed(params: Mapping[str, str], name: str) -> list[str]:
    """``name.1``, ``name.2``, ... in index order (QingCloud's list encoding)."""
    found: list[tuple[int, str]] = []
    for key, value in params.items():
        match = _INDEXED.match(key)
        if match and match["name"] == name:
            found.append((int(match["index"]), value))
    return [value for _, value in sorted(found)]


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise invalid(f"parameter [{name}] should not be empty")
    return value


def integer(params: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"parameter [{name}] should be an integer, got [{raw}]") from None
    if not low <= value <= high:
        raise invalid(f"parameter [{name}] should be between {low} and {high}, got [{value}]")
    return value


def statuses(params: Mapping[str, str], known: Collection[str]) -> list[str]:
    """``status.N`` filters of a Describe call, each one of the resource's ``known`` statuses."""
    given = indexed(params, "status")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise invalid(f"parameter [status] has unknown values {unknown}")
    return given


def offset_limit(params: Mapping[str, str]) -> tuple[int, int]:
    """A Describe call's page: ``offset`` (default 0) and ``limit`` (default 20, at most 100)."""
    return (
        integer(params, "offset", 0, low=0, high=1 << 31),
        integer(params, "limit", 20, low=1, high=100),
    )


def page(params: Mapping[str, str], found: Sequence[T]) -> Sequence[T]:
    """The slice of ``found`` that a Describe call's ``offset`` and ``limit`` ask for."""
    offset, limit = offset_limit(params)
    return found[offset : offset + limit]
