"""Go ``text/template`` with confd's function vocabulary, so existing confd templates render byte for byte.

It lives apart from the agent because two parts use it: the runtime checks an app's templates when
the app is submitted (``parse_confd``), the agent renders them on every node. It imports nothing
else of pitrix.

``parse(text, name, funcs, names=...)`` gives an immutable ``Template`` (parse once, cache it,
share it); ``Template.execute(data, funcs=...)`` renders it and raises ``TemplateError``
(``name:line:col: message``, line and column from 1) on failure, never returning partial output.
``parse_confd(text, name)`` parses with confd's functions: ``CONFD_FUNCS`` (pure, fixed in) and
the ``CONFD_BOUND`` names (``getv``, ``ls``..., over a render's key space), whose functions the
renderer passes to each ``execute``. Functions signal a template author's mistake with ``FuncError``.

Two things a caller should know. Output is a ``str`` whose undecodable bytes (a ``"\\xff"``
literal, ``base64Decode`` of binary data) are surrogate escapes: write it with
``encode("utf-8", "surrogateescape")`` to get Go's exact bytes. Execution is plain CPU work unless
a bound function blocks (the agent's ``lookupIP``/``lookupSRV`` ask the resolver): run ``execute``
in a worker thread when a template may use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitrix.gotemplate.confd import BOUND as CONFD_BOUND
    from pitrix.gotemplate.confd import FUNCS as CONFD_FUNCS
    from pitrix.gotemplate.confd import parse_confd
    from pitrix.gotemplate.errors import FuncError, TemplateError
    from pitrix.gotemplate.limits import Limits
    from pitrix.gotemplate.template import Funcs, Template, parse
    from pitrix.gotemplate.values import KVPair, KVPairs

# Each name, the submodule it lives in and its name there. Loaded on first use (PEP 562): a
# caller that needs one submodule (the agent's key space needs ``values`` and ``gopath``) does
# not pay for the parser, the executor and confd's functions, and ``import pitrix.gotemplate.x``
# does not load the rest of the package.
_EXPORTS: dict[str, tuple[str, str]] = {
    "CONFD_BOUND": ("confd", "BOUND"),
    "CONFD_FUNCS": ("confd", "FUNCS"),
    "parse_confd": ("confd", "parse_confd"),
    "FuncError": ("errors", "FuncError"),
    "TemplateError": ("errors", "TemplateError"),
    "Limits": ("limits", "Limits"),
    "Funcs": ("template", "Funcs"),
    "Template": ("template", "Template"),
    "parse": ("template", "parse"),
    "KVPair": ("values", "KVPair"),
    "KVPairs": ("values", "KVPairs"),
}


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{where[0]}"), where[1])
    globals()[name] = value  # found directly from now on
    return value


__all__ = [
    "CONFD_BOUND",
    "CONFD_FUNCS",
    "FuncError",
    "Funcs",
    "KVPair",
    "KVPairs",
    "Limits",
    "Template",
    "TemplateError",
    "parse",
    "parse_confd",
]
