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
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except LifecycleError as exc:
        return error_response(409, "conflict", str(exc))
    except TimeoutError:
        return error_response(408, "timeout", "the wait timed out; the action goes on")
    except StoreError as exc:
        get_logger("pitrix.api").error("store failed", path=request.path, error=str(exc))
        return error_response(503, "unavailable", f"pitrixd's store failed; try again ({exc})")
    except Exception:
        get_logger("pitrix.api").exception("request failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the pitrixd log")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming what is wrong with it."""
    try:
        data = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object")
    return data
