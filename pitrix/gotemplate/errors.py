"""The one error type of the template engine, carrying where in the source it went wrong.

Operators read these in the agent's log and the status it reports, so every error names the
template, the line and the column, like Go's ``template: name:line:col: ...`` without the prefix.
"""

from __future__ import annotations


class TemplateError(Exception):
    """A parse or execution error at ``name:line:col`` (line and column count from 1)."""

    def __init__(self, name: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{name}:{line}:{col}: {message}")
        self.name = name
        self.line = line
        self.col = col
        self.message = message


class FuncError(Exception):
    """Raised by template functions for a failure the template author caused (bad argument, missing key).

    The executor turns it, like any other exception a function raises, into a ``TemplateError`` that
    names the function and the place of the call.
    """


def position(text: str, offset: int) -> tuple[int, int]:
    """Line and column (both from 1, the column in characters) of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    return line, offset - start + 1
