"""Tags as QingCloud keeps them: named labels, created once and attached to resources.

A QingCloud tag is a name (and a colour), not a key/value pair; clients that need key/value labels
(pitrix's ``pitrix:cluster`` and friends) encode them in the name, which this book keeps verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.errors import NOT_FOUND, ApiError, invalid
from simulator.jobs import resource_id
from simulator.vm import now_iso

MAX_NAME = 128


@dataclass
class Tag:
    tag_id: str
    tag_name: str
    color: str = "#9f9bb7"
    resources: set[str] = field(default_factory=set)
    create_time: str = field(default_factory=now_iso)

    def brief(self) -> dict[str, object]:
        return {"tag_id": self.tag_id, "tag_name": self.tag_name, "color": self.color}

    def describe(self) -> dict[str, object]:
        return {**self.brief(), "resource_count": len(self.resources), "create_time": self.create_time}


class TagBook:
    def __init__(self) -> None:
        self._tags: dict[str, Tag] = {}

    def create(self, name: str, color: str = "") -> Tag:
        if not name or len(name) > MAX_NAME:
            raise invalid(f"parameter [tag_name] must be 1 to {MAX_NAME} characters")
        tag = Tag(resource_id("tag"), name, color or "#9f9bb7")
        self._tags[tag.tag_id] = tag
        return tag

    def existing(self, tag_ids: list[str]) -> list[Tag]:
        missing = [t for t in tag_ids if t not in self._tags]
        if missing:
            raise ApiError(NOT_FOUND, f"resource [{missing[0]}] not found")
        return [self._tags[t] for t in tag_ids]

    def describe(self, tag_ids: list[str], search_word: str = "") -> list[Tag]:
        tags = self.existing(tag_ids) if tag_ids else list(self._tags.values())
        return [t for t in tags if search_word in t.tag_name]

    def attach(self, pairs: list[tuple[str, str]]) -> None:
        """(tag_id, resource_id) pairs; every tag must exist (checked before anything changes)."""
        tags = self.existing([tag_id for tag_id, _ in pairs])
        for tag, (_, resource) in zip(tags, pairs, strict=True):
            tag.resources.add(resource)

    def detach(self, pairs: list[tuple[str, str]]) -> None:
        tags = self.existing([tag_id for tag_id, _ in pairs])
        for tag, (_, resource) in zip(tags, pairs, strict=True):
            tag.resources.discard(resource)

    def delete(self, tag_ids: list[str]) -> list[str]:
        for tag in self.existing(tag_ids):
            del self._tags[tag.tag_id]
        return tag_ids

    def of(self, resource: str) -> list[dict[str, object]]:
        return [t.brief() for t in self._tags.values() if resource in t.resources]

    def forget_resource(self, resource: str) -> None:
        for tag in self._tags.values():
            tag.resources.discard(resource)
