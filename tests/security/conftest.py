"""The suite's one deployment, started once per session (see ``deployment.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .deployment import Deployment, deployed


@pytest.fixture(scope="session")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    async with deployed(tmp_path_factory.mktemp("security")) as d:
        yield d
