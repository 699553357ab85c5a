"""Turning failures into JSON answers: a code, a message, and the field when one is at fault."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pitrix.logs import get_logger
from pitrix.runtime.machine import LifecycleError
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


class TooLarge(Exception):
    """A request body over the API's size limit: a 413 with the limit in the message."""


def too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` nests containers more than ``limit`` levels; iterative, so it cannot recurse."""
    pending: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, dict | list) else []
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 (413 past the size limit) naming what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise TooLarge(f"body: over the limit of {limit} bytes (api.max_body_bytes)") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        data = None
        deep = True
    else:
        deep = too_deep(data)
    if deep:
        raise InvalidRequest(f"body: JSON nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object")
    return data
