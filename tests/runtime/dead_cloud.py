"""A runtime whose cloud refuses every call at once: clusters on it fail fast, for tests of the
runtime's own bookkeeping (nothing listens on the discard port)."""

from __future__ import annotations

from typing import Any

DEAD_CLOUD: dict[str, Any] = {
    "name": "dead",
    "provider": "qingcloud",
    "endpoint": "http://127.0.0.1:9",
    "zone": "z1",
    "access_key_id": "AK",
    "secret_access_key": "very-secret",
}
