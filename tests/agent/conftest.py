"""Fixtures for the agent's tests: a VM root per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def vm_root(tmp_path: Path) -> Path:
    root = tmp_path / "vmroot"
    (root / "etc" / "confd" / "conf.d").mkdir(parents=True)
    (root / "etc" / "confd" / "templates").mkdir(parents=True)
    return root
