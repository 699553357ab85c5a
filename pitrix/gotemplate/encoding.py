"""JSON and YAML as Go's encoders write them, and JSON read as Go's decoder reads it.

confd's ``json``/``jsonArray`` decode numbers to float64 (``{{.port}}`` of ``8080`` prints ``8080``,
of ``12345678`` prints ``1.2345678e+07``). ``toJson`` writes like ``encoding/json``: compact,
sorted keys, ``<``, ``>`` and ``&`` escaped; ``toYaml`` like Go's yaml package: block style, sorted keys.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import TYPE_CHECKING, Any

from pitrix.gotemplate.errors import FuncError
from pitrix.gotemplate.gofmt import format_float, format_json_float
from pitrix.gotemplate.gotime import GoTime
from pitrix.gotemplate.values import go_type_name, is_int, is_struct, sort_keys

if TYPE_CHECKING:
    import yaml


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def decode(text: Any, want: type) -> Any:
    """Go's ``json.Unmarshal`` into ``map[string]interface{}`` (want=dict) or ``[]interface{}``."""
    if not isinstance(text, str):
        raise FuncError(f"wrong type for value; expected string; got {go_type_name(text)}")
    try:
        value = json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise FuncError("unexpected end of JSON input") from None
        raise FuncError(f"invalid JSON at offset {exc.pos}: {exc.msg}") from None
    except ValueError as exc:
        raise FuncError(str(exc)) from None
    if value is None:
        return {} if want is dict else []
    if not isinstance(value, want):
        kinds = {dict: "object", list: "array", str: "string", float: "number", bool: "bool"}
        target = "map[string]interface {}" if want is dict else "[]interface {}"
        raise FuncError(
            f"json: cannot unmarshal {kinds.get(type(value), 'value')} into Go value of type {target}"
        )
    return value


def _json_string(s: str) -> str:
    out = ['"']
    for c in s:
        cp = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif cp < 0x20 or c in "<>&" or cp in (0x2028, 0x2029):
            out.append(f"\\u{cp:04x}")
        elif 0xDC80 <= cp <= 0xDCFF:
            out.append("\\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def to_json(v: Any) -> str:
    """``json.Marshal``."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if is_int(v):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise FuncError(f"json: unsupported value: {format_float(v, 'g', None)}")
        return format_json_float(v)
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sort_keys(list(v))
        return "{" + ",".join(f"{_json_string(str(k))}:{to_json(v[k])}" for k in keys) + "}"
    if isinstance(v, GoTime):
        return _json_string(v.Format("2006-01-02T15:04:05.999999999Z07:00"))
    if is_struct(v):
        return (
            "{"
            + ",".join(f"{_json_string(f.name)}:{to_json(getattr(v, f.name))}" for f in dataclasses.fields(v))
            + "}"
        )
    raise FuncError(f"json: unsupported type: {go_type_name(v)}")


class _GoFloat(float):
    """A float64 that YAML should write as Go does (``1``, not ``1.0``)."""


@functools.cache
def _go_dumper() -> type[yaml.SafeDumper]:
    """PyYAML's safe dumper writing floats as Go does; made (and PyYAML loaded) on first use:
    most templates never call toYaml."""
    import yaml

    class GoDumper(yaml.SafeDumper):
        pass

    GoDumper.add_representer(_GoFloat, _represent_go_float)
    return GoDumper


def _represent_go_float(dumper: yaml.SafeDumper, value: _GoFloat) -> yaml.Node:
    if math.isnan(value):
        text = ".NaN"
    elif math.isinf(value):
        text = ".Inf" if value > 0 else "-.Inf"
    else:
        text = format_float(float(value), "g", None)
    # Written plain, as Go writes it: "3" and "1e+06" are not YAML 1.1 floats, so no explicit tag.
    import yaml

    return dumper.represent_scalar(dumper.resolve(yaml.ScalarNode, text, (True, False)), text)


def _yaml_ready(v: Any) -> Any:
    if isinstance(v, bool) or v is None or is_int(v) or isinstance(v, str):
        return v
    if isinstance(v, float):
        return _GoFloat(v)
    if isinstance(v, (list, tuple)):
        return [_yaml_ready(x) for x in v]
    if isinstance(v, dict):
        return {k: _yaml_ready(x) for k, x in v.items()}
    if isinstance(v, GoTime):
        return v.Format("2006-01-02T15:04:05.999999999Z07:00")
    if is_struct(v):
        return {f.name.lower(): _yaml_ready(getattr(v, f.name)) for f in dataclasses.fields(v)}
    raise FuncError(f"yaml: unsupported type: {go_type_name(v)}")


def to_yaml(v: Any) -> str:
    """Go yaml's ``Marshal``: block style, keys sorted."""
    import yaml

    out = yaml.dump(
        _yaml_ready(v),
        Dumper=_go_dumper(),
        default_flow_style=False,
        sort_keys=True,
        allow_unicode=True,
        width=2**31,
    )
    if out.endswith("\n...\n"):
        out = out[: -len("...\n")]
    return out
