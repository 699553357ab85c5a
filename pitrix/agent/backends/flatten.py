"""Nested trees (JSON from metad, YAML files) as the flat ``/a/b -> value`` map templates read."""

from __future__ import annotations

from typing import Any


def flatten(tree: Any, base: str = "") -> dict[str, str]:
    """Every leaf of ``tree`` under its slash-joined path, rendered as confd renders values.

    Scalars become strings the way confd's file backend prints them: booleans ``true``/``false``,
    floats without exponent; nulls are left out. Lists are indexed by position, as confd does.
    """
    out: dict[str, str] = {}
    _walk(tree, base.rstrip("/"), out)
    return out


def _walk(node: Any, path: str, out: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _walk(value, f"{path}/{leaf_name(key)}", out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{path}/{i}", out)
    elif node is not None:
        out[path or "/"] = scalar(node)


def leaf_name(key: Any) -> str:
    return scalar(key)


def scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # Go's FormatFloat(f, 'f', -1, 64): shortest digits, never an exponent.
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
        from decimal import Decimal  # here: few trees hold a float, and the watch keeps what it imports

        text = format(Decimal(repr(value)), "f")
        return text[:-2] if text.endswith(".0") else text
    return str(value)
