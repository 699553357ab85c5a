"""What a service with ``publish: true`` printed, written into its cluster's metadata.

AppCenter's custom metadata: a hook on a live member (``pre_scale_out``: an etcd ``member add``)
learns something the new nodes need, prints it as one JSON object, and every node of the cluster
reads it at ``/self/published/<key>``. Agents may only write their own status, so pitrixd writes
it: ``/clusters/<cid>/published`` (``keyspace.PUBLISHED``).

Semantics (docs/app-packages.md, "Membership hooks"):

- a node's output must be exactly one JSON object, at most ``MAX_OUTPUT`` bytes (the agent keeps
  only that much of a command's output: anything longer was cut and cannot be trusted);
- the objects of the nodes that ran the service are merged by top-level key; two nodes printing
  the same key with different values fail the step (nothing is written), naming both;
- the merged object is merged into what is published already (metad's PUT): keys not printed
  keep their values, a key printed as ``null`` is removed; nested objects become subtrees, other
  values text (numbers and booleans as their JSON text).
"""

from __future__ import annotations

import json
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.steps.context import JobContext, OperationError

MAX_OUTPUT = 4096  # the agent's (and the SSH fallback's) tail of a command's output


def stdout_of(result: dict[str, Any]) -> str:
    """What a command printed on its standard output, for output that is parsed (JSON, node ids):
    agents report it apart (``stdout_tail``); an older agent's combined output stands in."""
    value = result.get("stdout_tail")
    return str(value if value is not None else result.get("output_tail") or "")


def _check_keys(value: Any, where: str) -> None:
    if isinstance(value, list):
        for item in value:
            _check_keys(item, where)
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if not key or "/" in key or key in (".", "..") or "\0" in key:
            raise ValueError(f"key {where}{key!r} is not a metadata path segment (no '/', not empty)")
        _check_keys(item, f"{where}{key}.")


def parse_output(service: str, node_id: str, output: str) -> dict[str, Any]:
    """The JSON object a node printed, or OperationError saying why it cannot be published."""
    text = output.strip()
    why = f"{service} on {node_id} (publish: true)"
    if len(output.encode()) >= MAX_OUTPUT:
        raise OperationError(
            f"{why}: printed {MAX_OUTPUT} bytes or more, and only the last {MAX_OUTPUT} are kept; "
            "a published object must be smaller (send logs to a file)"
        )
    if not text:
        raise OperationError(f"{why}: printed nothing; it must print one JSON object")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise OperationError(
            f"{why}: its output is not JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); "
            f"it must print one JSON object and nothing else (send logs to a file): {shown!r}"
        ) from None
    if not isinstance(value, dict):
        raise OperationError(f"{why}: printed a JSON {type(value).__name__}, not an object")
    try:
        _check_keys(value, "")
    except ValueError as exc:
        raise OperationError(f"{why}: {exc}") from None
    return value


def merge(service: str, outputs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The nodes' objects in one, by top-level key; a key two nodes disagree on is an error."""
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}
    for node_id, value in outputs:
        for key, item in value.items():
            if key in merged and merged[key] != item:
                raise OperationError(
                    f"{service} (publish: true): {source[key]} and {node_id} printed different "
                    f"values for {key!r}; nodes that publish together must agree on each key"
                )
            merged[key] = item
            source.setdefault(key, node_id)
    return merged


async def publish(ctx: JobContext, service: str, results: list[tuple[str, dict[str, Any]]]) -> str:
    """Merge the successful results' outputs into the cluster's ``published`` metadata."""
    outputs = [(node_id, parse_output(service, node_id, stdout_of(result))) for node_id, result in results]
    merged = merge(service, outputs)
    if not merged:
        return "published nothing (empty object)"
    revision = await ctx.metad.put_data(ks.published(ctx.cid), merged)
    return f"published {', '.join(sorted(merged))} at revision {revision}"
