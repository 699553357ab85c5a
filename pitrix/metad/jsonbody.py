"""The one way metad reads a JSON request body: bounded in size and in nesting depth.

A body nested a hundred thousand levels deep made ``json.loads`` raise RecursionError, which
aiohttp answered with a 500 and a traceback, even before identification (``/self/bootstrap``).
Every endpoint that reads JSON, on both APIs, goes through :func:`read_json`: too large is a 413,
too deep or not JSON a 400, each naming the limit or the problem.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Deeper than any document metad stores (a cluster's tree is a handful of levels).
MAX_DEPTH = 64


class BodyError(Exception):
    """A request body metad will not take: ``status`` 400 or 413, ``field`` "body"."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(f"body: {problem}")
        self.status = status
        self.field = "body"


async def read_bytes(request: web.Request, limit: int) -> bytes:
    """The raw body, refused with a 413 past ``limit`` bytes (before reading it when declared)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyError(413, f"{declared} bytes is larger than the limit of {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(413, f"larger than the limit of {limit} bytes") from None
    if len(raw) > limit:
        raise BodyError(413, f"{len(raw)} bytes is larger than the limit of {limit} bytes")
    return raw


def parse(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``raw`` as JSON nested at most ``max_depth`` levels (BodyError otherwise)."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise BodyError(400, f"nested deeper than the limit of {max_depth} levels") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BodyError(400, f"is not valid JSON ({exc})") from None
    if _depth_exceeds(doc, max_depth):
        raise BodyError(400, f"nested deeper than the limit of {max_depth} levels")
    return doc


def _depth_exceeds(doc: Any, max_depth: int) -> bool:
    """Whether ``doc``'s containers nest deeper than ``max_depth``; iterative, so never recursing."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def read_json(
    request: web.Request, limit: int, *, max_depth: int = MAX_DEPTH, optional: bool = False
) -> Any:
    """The request's JSON body within ``limit`` bytes and ``max_depth`` levels.

    ``optional``: an empty body is None instead of a 400.
    """
    raw = await read_bytes(request, limit)
    if not raw.strip():
        if optional:
            return None
        raise BodyError(400, "is empty; a JSON document is required")
    return parse(raw, max_depth)


def error_response(exc: BodyError, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error both APIs answer a refused body with."""
    return web.json_response(
        {"error": str(exc), "code": exc.status, "field": exc.field}, status=exc.status, headers=headers
    )
