"""Validation errors in pitrix's own words: what is wrong and, for a misspelt name, the close one.

pydantic's messages ("Extra inputs are not permitted", "Input should be a valid string") speak of
its own model, not of the spec or request a person wrote; these say the same in the terms of the
document, and an unknown key or role comes with the known name it is closest to.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, get_args, get_origin

from pydantic import BaseModel

_PLAIN = {
    "missing": "required",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "too_short": "is too short",
    "too_long": "is too long",
}


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest known name, else ``(known: a, b)``, else nothing."""
    names = sorted(set(known))
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (known: {', '.join(names)})" if names else ""


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the model takes at ``loc`` (a path into the document), or None when unknown."""
    kind: Any = model
    for part in loc:
        while get_origin(kind) is not None:  # list[X], dict[str, X], X | None: into X
            args = [a for a in get_args(kind) if a is not type(None)]
            if not args:
                return None
            kind = args[-1]
            if isinstance(part, int) or part == "[key]":
                break
        if isinstance(part, int) or not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            continue
        field = kind.model_fields.get(str(part))
        if field is None:
            found = [f for f in kind.model_fields.values() if f.alias == part]
            if not found:
                return None
            field = found[0]
        kind = field.annotation
    while get_origin(kind) is not None:
        args = [a for a in get_args(kind) if a is not type(None)]
        kind = args[-1] if args else None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return [f.alias or name for name, f in kind.model_fields.items()]
    return None


def describe(item: Any, model: type[BaseModel] | None = None, root: str = "body") -> str:
    """One pydantic error as ``where: what`` in our words (``model``: for an unknown key's hint;
    ``root``: what an error of the whole document is said of)."""
    loc = tuple(p for p in item["loc"] if p != "[key]")
    where = ".".join(str(p) for p in loc) or root
    kind = item["type"]
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1]) if model is not None and loc else None
        return f"{where}: unknown key{did_you_mean(str(loc[-1]), known) if known else ''}"
    if kind == "value_error" and "error" in item.get("ctx", {}):
        return f"{where}: {item['ctx']['error']}"
    if kind in ("literal_error", "enum") and "expected" in item.get("ctx", {}):
        return f"{where}: must be one of {item['ctx']['expected']}, not {item.get('input')!r}"
    if kind in _PLAIN:
        shown = "" if kind == "missing" else f", not {item.get('input')!r}"
        return f"{where}: {_PLAIN[kind]}{shown}"
    return f"{where}: {item['msg']}"
