"""Every operation of the served OpenAPI document can be named by a client generator."""

from __future__ import annotations

import re

from pitrix.api.openapi import action_operation_id, openapi_document

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def operations() -> list[tuple[str, str, dict[str, object]]]:
    return [
        (method, path, operation)
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_has_a_unique_operation_id_and_declared_tags() -> None:
    declared = {tag["name"] for tag in openapi_document()["tags"]}
    seen: dict[str, str] = {}
    found = operations()
    assert len(found) > 30  # the action verbs are in too
    for method, path, operation in found:
        where = f"{method.upper()} {path}"
        op_id = operation.get("operationId")
        assert isinstance(op_id, str) and re.fullmatch(r"[a-z][A-Za-z0-9]*", op_id), where
        assert op_id not in seen, f"{where} reuses {op_id} of {seen.get(op_id)}"
        seen[op_id] = where
        tags = operation.get("tags")
        assert isinstance(tags, list) and tags, where
        assert set(tags) <= declared, f"{where}: tags {tags} not in the document's tags"


def test_action_operation_ids_follow_their_verb() -> None:
    assert action_operation_id("scale") == "scaleCluster"
    assert action_operation_id("scale_out") == "scaleOutCluster"
    item = openapi_document()["paths"]["/v1/clusters/{cid}/upgrade"]
    assert item["post"]["operationId"] == "upgradeCluster"
    assert item["get"]["operationId"] == "previewUpgrade"
