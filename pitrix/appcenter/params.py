"""A config.json field as a pitrix parameter (``EnvParam``): type, default and constraints.

AppCenter's form and pitrix's parameters mean nearly the same; where a package's default does not
fit its own constraints (an empty default for a required password with a pattern) pitrix would
refuse the spec, so the default goes and the parameter becomes required, and the report says so.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from pitrix.appcenter.form import FormField
from pitrix.runtime.spec import EnvParam

TYPES = {"string", "integer", "number", "boolean", "password"}


def _yes(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("yes", "true"))


def _scalar(value: Any) -> Any:
    """A default as pitrix takes it: lists and objects as their JSON text; a whole number written
    with a point (``2.0``) as the whole number, since AppCenter publishes it as ``2``."""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def infer(value: Any) -> dict[str, Any]:
    """A parameter from a value the package wrote literally (no form field behind it)."""
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "number"  # a number still, though 2.0 is written 2
    else:
        kind = "string"
    value = _scalar(value)
    return {"type": kind} if value is None else {"type": kind, "default": value}


def _valid(param: dict[str, Any]) -> str:
    """'' when pitrix accepts ``param``, else why not."""
    try:
        EnvParam.model_validate(param)
    except ValidationError as exc:
        return "; ".join(str(e["msg"]) for e in exc.errors())
    return ""


def convert(
    form: FormField | None, value: Any, *, secret_default: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """The pitrix parameter for a form field (``value`` its filled-in default) and the notes on
    what had to give (empty: mapped as it is). ``secret_default`` false: a password keeps no
    default (custom service parameters)."""
    if form is None:
        return infer(value), []
    spec = form.spec
    notes: list[str] = []
    kind = form.type
    if kind not in TYPES:
        notes.append(f"type {kind} taken as a string")
        kind = "string"
    param: dict[str, Any] = {"type": kind}
    description = str(spec.get("description") or spec.get("label") or "")
    if description:
        param["description"] = description
    for key in ("min", "max"):
        if isinstance(spec.get(key), int | float) and not isinstance(spec.get(key), bool):
            param[key] = spec[key]
    if isinstance(spec.get("range"), list) and spec["range"]:
        param["range"] = [_scalar(v) for v in spec["range"]]
    if isinstance(spec.get("pattern"), str) and spec["pattern"]:
        param["pattern"] = spec["pattern"]
    if "changeable" in spec:
        param["changeable"] = _yes(spec["changeable"])
    if _yes(spec.get("multichoice")) and "range" in param:
        param["multichoice"] = True
        if spec.get("separator", ",") != ",":
            notes.append(f"separator {spec['separator']!r} replaced by ','")
    default = _scalar(value)
    required = _yes(spec.get("required"))
    if default is None or (default == "" and (required or kind in ("integer", "number", "boolean"))):
        default = None
    if default is not None and not (kind == "password" and not secret_default):
        param["default"] = default
    elif default is not None:
        notes.append("a password parameter keeps no default")
    if default is None and required:
        param["required"] = True
    why = _valid(param)
    if why and "default" in param:
        del param["default"]
        param["required"] = True
        notes.append(f"default dropped ({why}): the value is asked for at create")
        why = _valid(param)
    if why and "pattern" in param:
        try:
            re.compile(param["pattern"])
        except re.error:
            notes.append(f"pattern dropped (Python cannot read it: {param.pop('pattern')})")
        why = _valid(param)
    if why:
        kept = {k: param[k] for k in ("description",) if k in param}
        param = {"type": "string", **kept}
        notes.append(f"constraints dropped ({why})")
    return param, notes
