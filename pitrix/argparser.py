"""An ArgumentParser for the entry points whose ``--help``, ``--version`` and usage errors must
answer at once.

argparse makes a HelpFormatter for every ``add_argument`` (to check its metavar), and each one asks
``shutil`` for the terminal's width; importing shutil loads zlib, bz2 and lzma, a tenth of a bare
Python's start. This formatter reads the width the way shutil does (``$COLUMNS``, then the
terminal of standard output, else 80 columns), so help text wraps exactly as before.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` says, without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class HelpFormatter(argparse.HelpFormatter):
    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width
        )


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, with :class:`HelpFormatter` unless told otherwise (its subcommands' parsers too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
