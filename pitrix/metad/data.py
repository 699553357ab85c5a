"""Turning management-API JSON documents into etcd operations.

metad's semantics: a nested JSON object addresses leaves by path; PUT merges those leaves into
what is there, POST replaces the subtree. Leaves are strings in etcd (numbers and booleans are
written as their JSON text, lists as objects keyed by index); ``null`` in a PUT deletes that key.
A key is either a leaf or a directory: writing one kind where the other exists removes the other,
so the tree never holds both at one path.
"""

from __future__ import annotations

import json
from typing import Any

from pitrix.metad.tree import Tree, join_path, split_path
from pitrix.store import Op

MAX_DEPTH = 32


class BadDocument(ValueError):
    """The JSON document cannot be stored; ``field`` names where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def check_segment(segment: str, field: str) -> None:
    if not segment or "/" in segment or segment in (".", "..") or "\0" in segment:
        raise BadDocument(field, f"{segment!r} is not a valid path segment")


def leaf_text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = json.dumps(value)
        if text in ("NaN", "Infinity", "-Infinity"):
            raise BadDocument(field, "must be a finite number")
        return text
    raise BadDocument(field, f"unsupported value of type {type(value).__name__}")


def flatten(doc: Any, base: list[str]) -> tuple[dict[str, str], list[str]]:
    """(leaf key → text, keys to delete for ``null``) of ``doc`` placed at path ``base``."""
    leaves: dict[str, str] = {}
    nulls: list[str] = []

    def walk(value: Any, path: list[str], depth: int) -> None:
        field = join_path(path) if path else "/"
        if depth > MAX_DEPTH:
            raise BadDocument(field, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            value = {str(i): item for i, item in enumerate(value)}
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise BadDocument(field, "object keys must be strings")
                check_segment(key, f"{field.rstrip('/')}/{key}")
                walk(item, [*path, key], depth + 1)
        elif value is None:
            nulls.append(join_path(path))
        else:
            if not path:
                raise BadDocument("/", "a single value needs a key path")
            leaves[join_path(path)] = leaf_text(value, field)

    walk(doc, base, 0)
    return leaves, nulls


def _conflicts(tree: Tree, key: str, base_depth: int) -> list[Op]:
    """Ops removing what would make ``key`` both a leaf and a directory."""
    ops: list[Op] = []
    parts = split_path(key)
    for depth in range(max(base_depth, 1), len(parts)):
        ancestor = join_path(parts[:depth])
        node = tree.find(ancestor)
        if node is not None and node.value is not None:
            ops.append(Op("delete", ancestor))
    node = tree.live(key)
    if node is not None and node.live_children():
        ops.append(Op("delete_prefix", key + "/"))
    return ops


def merge_ops(tree: Tree, path: str, doc: Any) -> list[Op]:
    """One transaction's ops merging ``doc`` into the subtree at ``path``."""
    base = split_path(path)
    leaves, nulls = flatten(doc, base)
    ops: dict[tuple[str, str], Op] = {}
    for key in nulls:
        ops[("delete", key)] = Op("delete", key)
        ops[("delete_prefix", key)] = Op("delete_prefix", key + "/")
    for key, text in leaves.items():
        for op in _conflicts(tree, key, 0):
            ops[(op.kind, op.key)] = op
        ops[("put", key)] = Op("put", key, text.encode())
    return list(ops.values())


def replace_ops(existing: list[str], path: str, doc: Any) -> list[Op]:
    """Ops making the subtree at ``path`` exactly ``doc``; ``existing`` are the keys there now."""
    base = split_path(path)
    leaves, _ = flatten(doc, base)
    ops = [Op("delete", key) for key in existing if key not in leaves]
    ops.extend(Op("put", key, text.encode()) for key, text in leaves.items())
    # Leaves above the subtree that would shadow it as a directory go too.
    for depth in range(1, len(base) + (0 if leaves.get(join_path(base)) is not None else 1)):
        ancestor = join_path(base[:depth])
        if ancestor not in leaves and ancestor not in existing:
            ops.append(Op("delete", ancestor))
    return ops


def delete_ops(path: str) -> list[Op]:
    base = split_path(path)
    if not base:
        return [Op("delete_prefix", "/")]
    key = join_path(base)
    return [Op("delete", key), Op("delete_prefix", key + "/")]
