"""How much one render may produce and take: the bounds that keep a hostile template from taking
the agent down with it.

Go's engine has no such bounds, but a Go template cannot grow a value without bound either (its
ints wrap, its functions are few). Here a template runs inside the agent's process, in a worker
thread that cannot be interrupted from outside, so the bounds are checked by the engine itself:
the output and every value a function returns are capped in size, functions that multiply their
input (``seq``, ``replace``, ``join``) check the size they would build before building it, ints
stay within Go's int64, and the render gives up after a deadline (checked as it walks, at every
loop iteration, template call and function call). Each is a ``TemplateError`` naming the limit.
The defaults are far above any real configuration file.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
MAX_OUTPUT = 16 * MIB  # characters a render may write
MAX_VALUE = 16 * MIB  # characters of one string a function returns
MAX_ITEMS = 1_000_000  # elements of one list a function returns or a range walks
DEADLINE = 10.0  # seconds one render may take
INT64 = (-(1 << 63), (1 << 63) - 1)


class LimitError(Exception):
    """A function would exceed a limit; the executor names the call's place in the message."""


@dataclass(frozen=True)
class Limits:
    """One render's bounds (a docstring also spares ``dataclass`` an inspect call)."""

    max_output: int = MAX_OUTPUT
    max_value: int = MAX_VALUE
    max_items: int = MAX_ITEMS
    deadline: float = DEADLINE


def check_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise LimitError(f"{what} would have {count} elements, more than the limit of {MAX_ITEMS}")


def check_chars(count: int, what: str) -> None:
    if count > MAX_VALUE:
        raise LimitError(f"{what} would be {count} characters, more than the limit of {MAX_VALUE}")
