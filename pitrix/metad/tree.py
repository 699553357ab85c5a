"""The in-memory mirror of the metadata keyspace as a tree of path segments.

Every node remembers the last revision at which anything beneath it changed (deletions included:
a deleted leaf stays as an empty tombstone carrying its revision). That one number answers both
"has this view changed since revision N?" without history and "is my cached rendering of this
subtree still good?", so unchanged subtrees are rendered once and shared by every reader.
"""

from __future__ import annotations

import json
from typing import Any


def split_path(path: str) -> list[str]:
    """Path segments of an etcd key or URL path; empty segments (``//``, trailing ``/``) vanish."""
    return [part for part in path.split("/") if part]


def join_path(parts: list[str] | tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


class Node:
    """One path segment: a leaf value, children, or (after deletions) an empty tombstone."""

    __slots__ = ("_json", "_json_rev", "_obj", "_obj_rev", "children", "leaves", "rev", "value")

    def __init__(self) -> None:
        self.children: dict[str, Node] = {}
        self.value: str | None = None
        self.leaves = 0  # live leaf values in this subtree, itself included
        self.rev = 0
        self._obj: Any = None
        self._obj_rev = -1
        self._json: str = ""
        self._json_rev = -1

    @property
    def live(self) -> bool:
        return self.leaves > 0

    def child(self, name: str) -> Node | None:
        node = self.children.get(name)
        return node if node is not None and node.live else None

    def live_children(self) -> list[tuple[str, Node]]:
        return [(name, node) for name, node in sorted(self.children.items()) if node.live]

    def obj(self) -> Any:
        """The subtree as nested dicts of strings (children win over a value on the same key).

        The result is cached until the subtree changes and shared between callers: never mutate it.
        """
        if self._obj_rev != self.rev:
            kids = self.live_children()
            if kids:
                self._obj = {name: node.obj() for name, node in kids}
            else:
                self._obj = self.value
            self._obj_rev = self.rev
        return self._obj

    def json(self) -> str:
        """The subtree as compact JSON text, rebuilt only along the changed paths."""
        if self._json_rev != self.rev:
            kids = self.live_children()
            if kids:
                inner = ",".join(f"{json.dumps(name)}:{node.json()}" for name, node in kids)
                self._json = "{" + inner + "}"
            else:
                self._json = json.dumps(self.value)
            self._json_rev = self.rev
        return self._json


def _size(node: Node) -> int:
    return sum(1 + _size(child) for child in node.children.values())


class Tree:
    """The whole keyspace: ``put`` and ``delete`` single keys at a revision, look subtrees up."""

    def __init__(self) -> None:
        self.root = Node()

    def put(self, key: str, value: str, rev: int) -> None:
        path = [self.root]
        node = self.root
        for part in split_path(key):
            nxt = node.children.get(part)
            if nxt is None:
                nxt = node.children[part] = Node()
            path.append(nxt)
            node = nxt
        created = node.value is None
        node.value = value
        for step in path:
            if created:
                step.leaves += 1
            step.rev = max(step.rev, rev)

    def delete(self, key: str, rev: int) -> None:
        path = [self.root]
        node = self.root
        for part in split_path(key):
            nxt = node.children.get(part)
            if nxt is None:
                return
            path.append(nxt)
            node = nxt
        if node.value is None:
            return
        node.value = None
        for step in path:
            step.leaves -= 1
            step.rev = max(step.rev, rev)

    def find(self, path: str | list[str]) -> Node | None:
        """The node at ``path``, tombstones included (None if the path never existed)."""
        # Hot: every read and every long-poll answer resolves a dozen paths. Splitting inline and
        # skipping empty segments here costs a third of going through split_path.
        node = self.root
        for part in path.split("/") if isinstance(path, str) else path:
            if part:
                nxt = node.children.get(part)
                if nxt is None:
                    return None
                node = nxt
        return node

    def live(self, path: str | list[str]) -> Node | None:
        node = self.find(path)
        return node if node is not None and node.live else None

    def rev_of(self, path: str) -> int:
        """Last revision at which anything at or under ``path`` changed, 0 if never seen."""
        node = self.find(path)
        return node.rev if node is not None else 0

    def prune(self) -> int:
        """Drop every tombstone (deleted, now empty subtree); returns how many nodes went.

        Afterwards the tree no longer knows when those paths were deleted, so the caller must
        treat revisions before the prune as unknown history (the mirror raises its base).
        """

        def sweep(node: Node) -> int:
            removed = 0
            for name, child in list(node.children.items()):
                if child.live:
                    removed += sweep(child)
                else:
                    removed += 1 + _size(child)
                    del node.children[name]
            return removed

        return sweep(self.root)

    def text(self, path: str) -> str | None:
        node = self.live(path)
        if node is None:
            return None
        return node.value if node.value is not None and not node.live_children() else None
