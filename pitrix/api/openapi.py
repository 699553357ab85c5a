"""The OpenAPI document of the admin API: schemas/openapi.yaml, plus one path per action verb.

The action paths (``POST /v1/clusters/{cid}/<verb>``) are made from the actions' own declarations
(``summary``, ``request_schema``), so a new action is documented by its own file.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import yaml

from pitrix.runtime.actions import BY_VERB

# A checkout's file first (it is the one edited); an installed wheel has it under its prefix
# (pyproject's data-files).
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
INSTALLED_SCHEMA_FILE = Path(sys.prefix) / "share" / "pitrix" / "openapi.yaml"
ACTION_RESPONSES = {
    status: {"$ref": f"#/components/responses/{name}"}
    for status, name in (
        ("202", "Accepted"),
        ("400", "Invalid"),
        ("401", "Unauthorized"),
        ("403", "Forbidden"),
        ("404", "NotFound"),
        ("409", "Conflict"),
        ("413", "TooLarge"),
        ("415", "NotJson"),
        ("421", "UnknownHost"),
    )
}


def action_operation_id(verb: str) -> str:
    """``scale`` -> ``scaleCluster``: generated clients name their methods after it."""
    head, *rest = verb.replace("-", "_").split("_")
    return head + "".join(part.capitalize() for part in rest) + "Cluster"


def action_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for verb, action in BY_VERB.items():
        operation: dict[str, Any] = {
            "operationId": action_operation_id(verb),
            "tags": ["actions"],
            "summary": action.summary,
            "responses": dict(ACTION_RESPONSES),
        }
        if action.request_schema is not None:
            operation["requestBody"] = {
                "required": action.body_required,
                "content": {"application/json": {"schema": action.request_schema}},
            }
        paths[f"/v1/clusters/{{cid}}/{verb}"] = {
            "parameters": [{"$ref": "#/components/parameters/cid"}],
            "post": operation,
        }
    return paths


@functools.cache
def openapi_document() -> dict[str, Any]:
    """Made once per process: the file is part of the installed tree and does not change."""
    with (SCHEMA_FILE if SCHEMA_FILE.exists() else INSTALLED_SCHEMA_FILE).open() as f:
        data: dict[str, Any] = yaml.safe_load(f)
    paths = dict(data["paths"])
    for path, item in action_paths().items():  # a verb may also have a GET of its own (upgrade)
        paths[path] = {**paths.get(path, {}), **item}
    data["paths"] = paths
    return data
