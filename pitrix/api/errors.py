"""Turning failures into JSON answers: a code, a message, and the field when one is at fault."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pitrix.logs import get_logger
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.service import InvalidRequest, NotFound
from pitrix.store import StoreError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# etcd's answers to a request over its --max-request-bytes, and over its gateway's message limit.
ETCD_TOO_LARGE = ("request is too large", "larger than max")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if field:
        body["error"]["field"] = field
    return web.json_response(body, status=status)


def _field_of(message: str) -> str | None:
    head = message.split(":", 1)[0]
    return head if head and " " not in head else None


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the path has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except InvalidRequest as exc:
        return error_response(400, "invalid", str(exc), _field_of(str(exc)))
    except TooLarge as exc:
        return error_response(413, "too_large", str(exc), "body")
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except LifecycleError as exc:
        return error_response(409, "conflict", str(exc))
    except TimeoutError:
        return error_response(408, "timeout", "the wait timed out; the action goes on")
    except StoreError as exc:
        if any(
            text in str(exc) for text in ETCD_TOO_LARGE
        ):  # a body under the API's limit that still made too big a write
            return error_response(413, "too_large", f"body: too large for pitrixd's store ({exc})", "body")
        get_logger("pitrix.api").error("store failed", path=request.path, error=str(exc))
        return error_response(503, "unavailable", f"pitrixd's store failed; try again ({exc})")
    except Exception:
        get_logger("pitrix.api").exception("request failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the pitrixd log")


# Deeper than any app spec or API body needs, far below the interpreter's recursion limit: nothing
# that walks a body later (validation, serialisation, logging) can hit a RecursionError.
MAX_DEPTH = 32
# Bodies up to this size are decoded on the event loop: a thread would cost more than the work.
INLINE_DECODE = 64 * 1024


class TooLarge(Exception):
    """A request body over the API's size limit: a 413 with the limit in the message."""


def too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` nests containers more than ``limit`` levels; level by level, so it cannot
    recurse, and touching each container once (JSON decodes to exact dicts and lists)."""
    level = [data] if type(data) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for value in level:
            for child in value.values() if type(value) is dict else value:
                if type(child) in (dict, list):
                    below.append(child)
        level = below
    return False


def _decode(raw: bytes) -> Any:
    """The body's JSON value, or an InvalidRequest; CPU work, so it runs in a thread."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        data, deep = None, True
    else:
        deep = too_deep(data)
    if deep:
        raise InvalidRequest(f"body: JSON nested deeper than {MAX_DEPTH} levels")
    return data


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 (413 past the size limit) naming what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise TooLarge(f"body: over the limit of {limit} bytes (api.max_body_bytes)") from None
    # A megabyte of JSON takes a good part of a second to decode and check: off the event loop.
    data = await asyncio.to_thread(_decode, raw) if len(raw) > INLINE_DECODE else _decode(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object")
    return data
