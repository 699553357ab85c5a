"""cluster.json.mustache filled with config.json's defaults, remembering where each value came from.

AppCenter's cluster file is plain ``{{path}}`` substitution that parses as JSON once filled. A
placeholder standing for a whole JSON value is filled with the field's default as JSON, and its
place remembered (``origins``): the importer then knows that ``nodes.0.env.zkAdminEnabled`` is the
form's ``env.admin_enabled``, with its type, range and description. A placeholder inside a JSON
string is filled with the default's text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pitrix.appcenter.errors import PackageError
from pitrix.appcenter.files import CLUSTER
from pitrix.appcenter.form import FormField

# A sentinel no package writes: a control character, JSON-escaped, around the placeholder's index.
_MARK = "\x01"

Path = tuple[str | int, ...]


@dataclass
class Filled:
    """The cluster definition with defaults in, where each placeholder was, and the unknown ones."""

    data: dict[str, Any]
    origins: dict[Path, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)  # placeholders inside a JSON string

    def origin(self, *path: str | int) -> str | None:
        return self.origins.get(tuple(path))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _substitute(
    text: str, form: dict[str, FormField], names: list[str], unknown: list[str], inline: list[str]
) -> str:
    out: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        if text.startswith("{{", i):
            triple = text.startswith("{{{", i)
            close = "}}}" if triple else "}}"
            end = text.find(close, i)
            if end < 0:
                raise PackageError(f"{CLUSTER}: line {_line_of(text, i)}: a {{{{ that is never closed")
            name = text[i + (3 if triple else 2) : end].strip()
            i = end + len(close)
            if name.startswith("!"):
                continue  # a mustache comment
            name = name.removeprefix("&").strip()
            if not name or name[0] in "#^/>=":
                raise PackageError(
                    f"{CLUSTER}: line {_line_of(text, i)}: {{{{{name}}}}}: only plain "
                    "{{path}} placeholders are supported, not sections or partials"
                )
            known = form.get(name)
            if known is None and name not in unknown:
                unknown.append(name)
            if in_string:
                if name not in inline:
                    inline.append(name)
                out.append(json.dumps(_text(known.default if known else None))[1:-1])
            else:
                out.append(json.dumps(f"{_MARK}{len(names)}{_MARK}"))
                names.append(name)
            continue
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        out.append(char)
        i += 1
    return "".join(out)


def _resolve(
    node: Any, path: Path, names: list[str], form: dict[str, FormField], origins: dict[Path, str]
) -> Any:
    if isinstance(node, dict):
        return {k: _resolve(v, (*path, k), names, form, origins) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, (*path, i), names, form, origins) for i, v in enumerate(node)]
    if isinstance(node, str) and len(node) > 2 and node[0] == _MARK and node[-1] == _MARK:
        name = names[int(node[1:-1])]
        origins[path] = name
        known = form.get(name)
        return known.default if known is not None else None
    return node


def fill(text: str, form: dict[str, FormField]) -> Filled:
    """The package's cluster definition with the form's defaults filled in (PackageError naming
    the line when it does not parse as JSON once filled)."""
    names: list[str] = []
    unknown: list[str] = []
    inline: list[str] = []
    json_text = _substitute(text, form, names, unknown, inline)
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise PackageError(
            f"{CLUSTER}: does not parse as JSON once filled in: {exc.msg} "
            f"at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise PackageError(f"{CLUSTER}: the cluster definition is a JSON object")
    origins: dict[Path, str] = {}
    resolved = _resolve(data, (), names, form, origins)
    return Filled(resolved, origins, unknown, inline)
