"""Go's ``path`` package (slash-separated paths): Clean, Base, Dir and Match.

confd's ``base``/``dir`` and memkv's ``ls``/``lsdir``/``gets`` are built on these; Python's
posixpath differs at the edges (``//a``, ``""``, globs crossing ``/``), so they are rebuilt here.
"""

from __future__ import annotations

import re

from pitrix.gotemplate.errors import FuncError


def clean(p: str) -> str:
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def base(p: str) -> str:
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p[p.rfind("/") + 1 :]


def dir(p: str) -> str:
    return clean(p[: p.rfind("/") + 1])


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise FuncError("syntax error in pattern")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise FuncError("syntax error in pattern")
    return pattern[i], i + 1


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``path.Match`` as a regular expression: ``*`` and ``?`` never match ``/``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise FuncError("syntax error in pattern")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            ranges: list[str] = []
            while True:
                if i >= n:
                    raise FuncError("syntax error in pattern")
                if pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                ranges.append(f"{re.escape(lo)}-{re.escape(hi)}" if lo <= hi else "(?!)")
            body = "".join(r for r in ranges if r != "(?!)")
            if not body:
                out.append("[^\\s\\S]" if not negate else "[\\s\\S]")
            else:
                out.append(("[^" if negate else "[") + body + "]")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def match(pattern: str, name: str) -> bool:
    return glob_regex(pattern).match(name) is not None
