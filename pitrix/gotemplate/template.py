"""The engine's entry points: ``parse`` a source once, ``execute`` the result many times.

A ``Template`` never changes after ``parse``, so one parsed template may be cached and executed by
any number of renders, each with its own functions: the functions whose behaviour depends on a
render (a key space, an environment) are declared by name when parsing and passed to ``execute``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pitrix.gotemplate import nodes as n
from pitrix.gotemplate.builtins import BUILTINS
from pitrix.gotemplate.errors import TemplateError
from pitrix.gotemplate.executor import Arity, State
from pitrix.gotemplate.limits import Limits
from pitrix.gotemplate.parser import Parser

Funcs = Mapping[str, Callable[..., Any]]

_NO_FUNCS: Funcs = MappingProxyType({})


class Template:
    """A parsed template and the templates it defines (``define``/``block``).

    ``funcs`` are the functions fixed at parse time (a read-only copy); ``names`` the further
    function names the template may call, whose functions each ``execute`` supplies. Nothing here
    is re-bound after parsing; the one mutable part, a memo of functions' arities keyed by their
    code, only ever gains the same answer for the same key, so sharing a template is safe.
    """

    def __init__(
        self,
        name: str,
        text: str,
        trees: Mapping[str, n.ListNode],
        funcs: Funcs,
        names: frozenset[str],
    ) -> None:
        self.name = name
        self.text = text
        self.trees: Mapping[str, n.ListNode] = MappingProxyType(dict(trees))
        self.funcs: Funcs = MappingProxyType(dict(funcs)) if funcs else _NO_FUNCS
        self.names = names
        self._arities: dict[Any, Arity | None] = {}

    @property
    def root(self) -> n.ListNode:
        return self.trees[self.name]

    def defined_templates(self) -> list[str]:
        """Names of the templates defined in the source, sorted, without the main one."""
        return sorted(t for t in self.trees if t != self.name)

    def execute(
        self,
        data: Any = None,
        *,
        funcs: Funcs | None = None,
        name: str | None = None,
        limits: Limits | None = None,
    ) -> str:
        """Render with ``data`` as dot; ``name`` runs one of the defined templates instead of the main one.

        ``funcs`` are this run's functions (those named at parse time, bound to this render's
        context); they win over the template's own. Calling a declared name that ``funcs`` does
        not bind is an execution error naming the function. ``limits`` bound the output, values
        and time (``limits.Limits()`` unless given).
        """
        tree_name = self.name if name is None else name
        tree = self.trees.get(tree_name)
        if tree is None:
            raise TemplateError(self.name, 1, 1, f'no such template "{tree_name}"')
        use = self.funcs if not funcs else {**self.funcs, **funcs}
        state = State(self.name, self.text, self.trees, use, self._arities, limits)
        try:
            return state.run(tree, data)
        except RecursionError:
            raise TemplateError(self.name, 1, 1, "template recursion too deep") from None


def parse(
    text: str,
    name: str = "template",
    funcs: Funcs | None = None,
    *,
    names: Iterable[str] = (),
) -> Template:
    """Parse Go template ``text``.

    It may call Go's builtins, ``funcs`` (fixed into the template) and the functions in ``names``
    (bound on each ``execute``); a call of any other function is a parse error, as in Go.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse: text must be str, not {type(text).__name__}")
    fixed: Funcs = funcs if funcs is not None else _NO_FUNCS
    late = frozenset(names)
    known = frozenset(fixed) | late | BUILTINS.keys()
    try:
        trees = Parser(name, text, known).parse()
    except RecursionError:
        raise TemplateError(name, 1, 1, "template nested too deeply") from None
    return Template(name, text, trees, fixed, late)
