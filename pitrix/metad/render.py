"""Answer bodies in the caller's format: JSON (default), metad's text lines, or YAML by ``Accept``.

JSON is stitched from the tree's cached per-subtree JSON, so a thousand callers of one view after
one write serialize only what that write changed.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from pitrix.metad import keyspace, selfview
from pitrix.metad.tree import Node, Tree

JSON = "application/json"
TEXT = "text/plain"
YAML = "application/yaml"
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def negotiate(accept: str | None) -> str:
    """The answer's media type: the first acceptable of ours in the caller's order, JSON otherwise."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for index, item in enumerate(accept.split(",")):
        fields = [f.strip() for f in item.split(";")]
        media = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if media in _YAML_TYPES:
            kind = YAML
        elif media == TEXT:
            kind = TEXT
        elif media in (JSON, "application/*", "*/*"):
            kind = JSON
        else:
            continue
        if quality > 0 and (best is None or (quality, -index) > (best[0], -best[1])):
            best = (quality, index, kind)
    return best[2] if best else JSON


def to_obj(value: Any) -> Any:
    if isinstance(value, Node):
        return value.obj()
    if isinstance(value, dict):
        return {key: to_obj(item) for key, item in value.items()}
    return value


def to_json(value: Any) -> str:
    if isinstance(value, Node):
        return value.json()
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value)


def _flatten(value: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}/{key}", out)
    else:
        out.append((prefix or "/", "" if value is None else str(value)))


def to_text(value: Any) -> str:
    """metad's text form: a leaf as itself, a subtree as sorted ``/path<TAB>value`` lines."""
    obj = to_obj(value)
    if not isinstance(obj, dict):
        return "" if obj is None else str(obj)
    lines: list[tuple[str, str]] = []
    _flatten(obj, "", lines)
    return "".join(f"{key}\t{val}\n" for key, val in sorted(lines))


def body(value: Any, media: str) -> tuple[str, str]:
    """(text, content type) of ``value`` rendered as ``media``."""
    if media == TEXT:
        return to_text(value), "text/plain"
    if media == YAML:
        return yaml.safe_dump(to_obj(value), default_flow_style=False, sort_keys=True), "application/yaml"
    return to_json(value), "application/json"


def answer(value: Any, media: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text, content_type = body(value, media)
    return web.Response(text=text, status=status, content_type=content_type, headers=headers)


_ORDER = tuple(sorted(selfview.SELF_SECTIONS))  # to_json's key order
_PREFIX = {section: json.dumps(section) + ":" for section in selfview.SELF_SECTIONS}


class SharedSections:
    """The JSON of the ``/self`` sections a role's instances share, rendered once per tree generation.

    A write that releases a thousand long-polls of one cluster would otherwise look up and join
    the same cluster- and role-wide sections a thousand times; only ``host`` and ``cmd`` differ
    between instances (and ``env`` for an instance an env rollout reached first: ``self_json``).
    Entries live for one generation of the mirror's tree (any change drops them).
    """

    def __init__(self) -> None:
        self._generation = -1
        self._by_role: dict[tuple[str, str], dict[str, str]] = {}

    def get(self, tree: Tree, generation: int, mapping: selfview.Mapping) -> dict[str, str]:
        if generation != self._generation:
            self._by_role.clear()
            self._generation = generation
        key = (mapping.cluster_id, mapping.role)
        fragments = self._by_role.get(key)
        if fragments is None:
            shared = tuple(s for s in selfview.SELF_SECTIONS if s not in selfview.INSTANCE_SECTIONS)
            view = selfview.build(tree, mapping, shared, staged=False)
            fragments = self._by_role[key] = {s: _PREFIX[s] + to_json(value) for s, value in view.items()}
        return fragments


def self_json(tree: Tree, mapping: selfview.Mapping, shared: dict[str, str]) -> str:
    """``to_json(selfview.build(tree, mapping))``, from the role's shared fragments and the
    instance's own sections."""
    parts = []
    for section in _ORDER:
        if section in selfview.INSTANCE_SECTIONS:
            node = tree.live(mapping.sources[section])
            if node is not None:
                parts.append(_PREFIX[section] + node.json())
        elif section == keyspace.ENV and (staged := selfview.staged_env(tree, mapping)) is not None:
            parts.append(_PREFIX[section] + staged.json())  # a rollout reached this instance first
        else:
            fragment = shared.get(section)
            if fragment is not None:
                parts.append(fragment)
    return "{" + ",".join(parts) + "}"


def json_text(text: str, headers: dict[str, str] | None = None) -> web.Response:
    """A 200 with an already rendered JSON body (the same headers ``answer`` gives)."""
    return web.Response(text=text, content_type=JSON, headers=headers)


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """Errors are always JSON, whatever the caller accepts, so every client can parse them."""
    payload = {"error": message, "code": status, **extra}
    return web.json_response(payload, status=status, headers=headers)
