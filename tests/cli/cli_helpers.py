"""Tokens and the pitrix executable shared by the CLI tests."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

ADMIN = "cli-admin-token-0123456789"
ALICE = "cli-alice-token-0123456789"
PITRIX = str(Path(sys.executable).parent / "pitrix")

Run = Callable[..., Awaitable[tuple[int, str, str]]]
