"""The parse tree of a template, shaped like Go's ``text/template/parse`` nodes.

Every node keeps its offset in the source so execution errors can name line and column. ``str()``
of a node gives its template source form, as Go's ``Node.String`` does, for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Node:
    __slots__ = ()
    pos: int


@dataclass(slots=True)
class ListNode(Node):
    pos: int
    nodes: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass(slots=True)
class TextNode(Node):
    pos: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class FieldNode(Node):
    pos: int
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


@dataclass(slots=True)
class VariableNode(Node):
    pos: int
    idents: tuple[str, ...]  # idents[0] is the variable's name with its "$"

    def __str__(self) -> str:
        return ".".join(self.idents)


@dataclass(slots=True)
class IdentifierNode(Node):
    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(slots=True)
class DotNode(Node):
    pos: int

    def __str__(self) -> str:
        return "."


@dataclass(slots=True)
class NilNode(Node):
    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass(slots=True)
class BoolNode(Node):
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(slots=True)
class NumberNode(Node):
    """A numeric or character constant; ``value`` is what Go's idealConstant yields, or ``error``."""

    pos: int
    text: str
    value: Any
    error: str | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class StringNode(Node):
    pos: int
    quoted: str
    text: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(slots=True)
class CommandNode(Node):
    pos: int
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass(slots=True)
class PipeNode(Node):
    pos: int
    decl: list[VariableNode] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(str(d) for d in self.decl) + (" = " if self.is_assign else " := ")
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass(slots=True)
class ChainNode(Node):
    """A term followed by fields: ``(pipeline).A.B`` or ``func.A``."""

    pos: int
    node: Node
    fields: tuple[str, ...]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


@dataclass(slots=True)
class ActionNode(Node):
    pos: int
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass(slots=True)
class BranchNode(Node):
    pos: int
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None


class IfNode(BranchNode):
    __slots__ = ()

    def __str__(self) -> str:
        return f"{{{{if {self.pipe}}}}}"


class RangeNode(BranchNode):
    __slots__ = ()

    def __str__(self) -> str:
        return f"{{{{range {self.pipe}}}}}"


class WithNode(BranchNode):
    __slots__ = ()

    def __str__(self) -> str:
        return f"{{{{with {self.pipe}}}}}"


@dataclass(slots=True)
class TemplateNode(Node):
    pos: int
    name: str
    pipe: PipeNode | None

    def __str__(self) -> str:
        return f'{{{{template "{self.name}"' + (f" {self.pipe}" if self.pipe else "") + "}}"


@dataclass(slots=True)
class BreakNode(Node):
    pos: int

    def __str__(self) -> str:
        return "{{break}}"


@dataclass(slots=True)
class ContinueNode(Node):
    pos: int

    def __str__(self) -> str:
        return "{{continue}}"


def is_empty_tree(node: Node) -> bool:
    """Go's ``IsEmptyTree``: only whitespace text; such a definition may be replaced by a later one."""
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return not node.text.strip()
    return False
