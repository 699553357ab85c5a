"""config.json: the form a user fills in, read as a flat table of fields by their mustache path.

A field's path joins its ancestors' keys and its own with dots (``env.etcd_node.quotabytes``);
keys may hold dots themselves (``env.4lw.commands.whitelist``), so paths are looked up whole,
never split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pitrix.appcenter.errors import PackageError
from pitrix.appcenter.files import CONFIG


@dataclass(frozen=True)
class FormField:
    """One leaf of config.json: its full path and its definition as the package wrote it."""

    path: str
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def default(self) -> Any:
        return self.spec.get("default")

    @property
    def type(self) -> str:
        return str(self.spec.get("type", "string"))


def _walk(node: Any, prefix: str, where: str, out: dict[str, FormField]) -> None:
    if not isinstance(node, dict):
        raise PackageError(f"{CONFIG}: {where}: each item is an object with a key")
    key = node.get("key")
    if not isinstance(key, str) or not key:
        raise PackageError(f"{CONFIG}: {where}: an item without a key")
    path = f"{prefix}.{key}" if prefix else key
    children = node.get("properties")
    if node.get("type") == "array" and isinstance(children, list):
        for index, child in enumerate(children):
            _walk(child, path, f"{where}.properties.{index}", out)
    else:
        out[path] = FormField(path, node)


def read_form(text: str) -> dict[str, FormField]:
    """config.json's fields by path, or PackageError naming what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PackageError(f"{CONFIG}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("properties"), list):
        raise PackageError(f"{CONFIG}: properties: the form's top level is an object with a properties list")
    out: dict[str, FormField] = {}
    for index, item in enumerate(data["properties"]):
        _walk(item, "", f"properties.{index}", out)
    return out
