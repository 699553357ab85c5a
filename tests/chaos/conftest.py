"""The reliability suite: a private simulator and pitrixd (bench/stack.py) per test.

Short by default (it runs inside `make test`); ``CHAOS_LONG=1`` (`make chaos`) for the long form.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.stack import Stack, running_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def long_form() -> bool:
    return os.environ.get("CHAOS_LONG", "") not in ("", "0")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as s:
        yield s
