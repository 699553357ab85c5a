"""The OpenAPI document of the admin API, kept as YAML in the repository's schemas/ directory."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """Parsed once per process: the file is part of the installed tree and does not change."""
    with SCHEMA_FILE.open() as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data
