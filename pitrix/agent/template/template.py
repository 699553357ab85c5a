"""The engine's entry points: ``parse`` a source once, ``execute`` the result many times."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pitrix.agent.template import nodes as n
from pitrix.agent.template.builtins import BUILTINS
from pitrix.agent.template.errors import TemplateError
from pitrix.agent.template.executor import Arity, State
from pitrix.agent.template.limits import Limits
from pitrix.agent.template.parser import Parser

Funcs = Mapping[str, Callable[..., Any]]


class _KnownNames:
    """Function names the parser accepts: the caller's (looked up live) and Go's builtins."""

    def __init__(self, funcs: Funcs) -> None:
        self.funcs = funcs

    def __contains__(self, name: object) -> bool:
        return name in self.funcs or name in BUILTINS


class Template:
    """A parsed template and the templates it defines (``define``/``block``).

    It keeps the function mapping given to ``parse`` by reference and looks functions up when it
    executes, so a caller may re-bind them (for instance to fresh data) by updating that mapping in
    place, or pass ``funcs`` to ``execute`` for one run.
    """

    def __init__(self, name: str, text: str, trees: dict[str, n.ListNode], funcs: Funcs) -> None:
        self.name = name
        self.text = text
        self.trees = trees
        self.funcs = funcs
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
        ``limits`` bound the output, values and time (``limits.Limits()`` unless given)."""
        tree_name = self.name if name is None else name
        tree = self.trees.get(tree_name)
        if tree is None:
            raise TemplateError(self.name, 1, 1, f'no such template "{tree_name}"')
        use = self.funcs if funcs is None else {**self.funcs, **funcs}
        state = State(self.name, self.text, self.trees, use, self._arities, limits)
        try:
            return state.run(tree, data)
        except RecursionError:
            raise TemplateError(self.name, 1, 1, "template recursion too deep") from None


def parse(text: str, name: str = "template", funcs: Funcs | None = None) -> Template:
    """Parse Go template ``text``; ``funcs`` are the functions it may call besides Go's builtins."""
    if not isinstance(text, str):
        raise TypeError(f"parse: text must be str, not {type(text).__name__}")
    use: Funcs = funcs if funcs is not None else {}
    try:
        trees = Parser(name, text, _KnownNames(use)).parse()
    except RecursionError:
        raise TemplateError(name, 1, 1, "template nested too deeply") from None
    return Template(name, text, trees, use)
