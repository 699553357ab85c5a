"""Answer bodies in the caller's format, chosen by ``Accept`` as metad chooses: metad's text lines
(its default: curl, wget), JSON, or YAML; errors in the same format, in metad's shapes.

JSON is stitched from the tree's cached per-subtree JSON, so a thousand callers of one view after
one write serialize only what that write changed.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from pitrix.metad import keyspace, selfview
from pitrix.metad.tree import Node, Tree

JSON = "application/json"
TEXT = "text/plain"
YAML = "application/yaml"


# What metad offers, in its order: with equal preference the earlier wins, so ``*/*`` is text.
_OFFERS = ("text/plain", JSON, "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _accept_specs(accept: str) -> list[tuple[str, float]]:
    """``Accept``'s media ranges and qualities, read as metad reads them: case as sent, and a
    parameter other than ``q`` (or a malformed ``q``) ends the reading of the header there."""
    specs: list[tuple[str, float]] = []
    for item in accept.split(","):
        fields = item.split(";")
        media = fields[0].strip()
        if not media:
            break
        quality = 1.0
        if len(fields) > 1:
            param = fields[1].strip()
            if not param.startswith("q="):
                break
            try:
                quality = float(param[2:])
            except ValueError:
                break
            if not 0.0 <= quality <= 1.0:
                break
        specs.append((media, quality))
        if len(fields) > 2:
            break
    return specs


def negotiate(accept: str | None) -> str:
    """The answer's media type, chosen as metad chooses: text unless the caller prefers JSON or
    YAML (no ``Accept``, ``*/*`` and ``text/*`` are text); the most specific match wins."""
    if accept == JSON:
        return JSON  # what every agent sends: no parsing on the hot path
    if not accept:
        return TEXT
    best, best_q, best_wild = TEXT, -1.0, 3
    specs = _accept_specs(accept)
    for offer in _OFFERS:
        for media, quality in specs:
            if quality == 0.0 or quality < best_q:
                continue
            if media == "*/*":
                wild = 2
            elif media.endswith("/*"):
                if not offer.startswith(media[:-1]):
                    continue
                wild = 1
            elif media == offer:
                wild = 0
            else:
                continue
            if quality > best_q or best_wild > wild:
                best, best_q, best_wild = offer, quality, wild
    if "json" in best:
        return JSON
    return YAML if "yaml" in best else TEXT


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


def pretty_json(value: Any) -> str:
    """``?pretty=true``: indented by two spaces, keys sorted, ``<>&`` escaped, as metad writes it."""
    text = json.dumps(to_obj(value), indent=2, sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def body(value: Any, media: str, pretty: bool = False) -> tuple[str, str]:
    """(text, content type) of ``value`` rendered as ``media``."""
    if media == TEXT:
        return to_text(value), TEXT
    if media == YAML:
        return yaml.safe_dump(to_obj(value), default_flow_style=False, sort_keys=True), YAML
    return (pretty_json(value) if pretty else to_json(value)), JSON


def answer(
    value: Any, media: str, status: int = 200, headers: dict[str, str] | None = None, pretty: bool = False
) -> web.Response:
    text, content_type = body(value, media, pretty)
    if media == TEXT:
        # metad's text answers say ``text/plain`` without a charset; aiohttp would add one.
        return web.Response(
            body=text.encode(), status=status, headers={**(headers or {}), "Content-Type": TEXT}
        )
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


def header_lines(headers: dict[str, str]) -> str:
    """``headers`` as :func:`json_bytes` writes them (a fan-out's answers share one generation's)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def json_bytes(text: str, own: str) -> bytes:
    """What aiohttp writes for ``json_text(text, headers)`` to a kept-alive HTTP/1.1 request, ``own``
    being ``header_lines(headers)``: status line, those headers in their order, then the type,
    length, date and server it adds, and the body.

    A parked long-poll is answered with these bytes by its connection's gate itself
    (pitrix.metad.parking), without aiohttp parsing the request in the fan-out window;
    tests/metad/test_parking.py compares both answers byte for byte.
    """
    body = text.encode()
    head = (
        f"HTTP/1.1 200 OK\r\n{own}Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
    )
    return head.encode() + body


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """A JSON error whatever the caller accepts (``failure`` is the instance API's, negotiated)."""
    payload = {"error": message, "code": status, **extra}
    return web.json_response(payload, status=status, headers=headers)


# metad's answer to a path nothing is at, in each format (its JSON shape is what confd-yunify's
# metad backend reads into its variables when it asks for an absent key).
NOT_FOUND = "Not found"
_ERROR_TYPE = "ERROR"


def failure(
    media: str, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An instance-API error in the caller's format, in metad's shape.

    Text is the message and a newline; JSON and YAML are ``{"code", "message", "type": "ERROR"}``,
    with pitrix's own fields (``field``, ``reason``, a more precise ``error``) after them when the
    error is one metad does not have. metad labels every error ``text/plain; charset=utf-8``
    whatever its body; pitrix labels each body as what it is.
    """
    if media == TEXT:
        return web.Response(
            body=(message + "\n").encode(),
            status=status,
            headers={
                **(headers or {}),
                "Content-Type": "text/plain; charset=utf-8",
                "X-Content-Type-Options": "nosniff",
            },
        )
    payload = {"code": status, "message": message, "type": _ERROR_TYPE, **extra}
    if media == YAML:
        text = yaml.safe_dump(payload, default_flow_style=False, sort_keys=True)
        return web.Response(text=text, status=status, content_type=YAML, headers=headers)
    return web.json_response(payload, status=status, headers=headers)
