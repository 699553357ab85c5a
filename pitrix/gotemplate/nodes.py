"""The parse tree of a template, shaped like Go's ``text/template/parse`` nodes.

Every node keeps its offset in the source so execution errors can name line and column. ``str()``
of a node gives its template source form, as Go's ``Node.String`` does, for error messages.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Node:
    """Plain slotted classes with the equality and repr a dataclass would give them: the 18
    ``@dataclass(slots=True)`` classes this module had cost more to create (each one generated,
    compiled and rebuilt for its slots) than the rest of the template engine's import, paid by
    every ``pitrix-agent -onetime``."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    pos: int

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Node)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({args})"


class ListNode(Node):
    __slots__ = _fields = ("pos", "nodes")
    pos: int
    nodes: list[Node]

    def __init__(self, pos: int, nodes: list[Node] | None = None) -> None:
        self.pos = pos
        self.nodes = [] if nodes is None else nodes

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class TextNode(Node):
    __slots__ = _fields = ("pos", "text")
    pos: int
    text: str

    def __init__(self, pos: int, text: str) -> None:
        self.pos = pos
        self.text = text

    def __str__(self) -> str:
        return self.text


class FieldNode(Node):
    __slots__ = _fields = ("pos", "idents")
    pos: int
    idents: tuple[str, ...]

    def __init__(self, pos: int, idents: tuple[str, ...]) -> None:
        self.pos = pos
        self.idents = idents

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


class VariableNode(Node):
    __slots__ = _fields = ("pos", "idents")
    pos: int
    idents: tuple[str, ...]  # idents[0] is the variable's name with its "$"

    def __init__(self, pos: int, idents: tuple[str, ...]) -> None:
        self.pos = pos
        self.idents = idents

    def __str__(self) -> str:
        return ".".join(self.idents)


class IdentifierNode(Node):
    __slots__ = _fields = ("pos", "name")
    pos: int
    name: str

    def __init__(self, pos: int, name: str) -> None:
        self.pos = pos
        self.name = name

    def __str__(self) -> str:
        return self.name


class DotNode(Node):
    __slots__ = _fields = ("pos",)
    pos: int

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "."


class NilNode(Node):
    __slots__ = _fields = ("pos",)
    pos: int

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "nil"


class BoolNode(Node):
    __slots__ = _fields = ("pos", "value")
    pos: int
    value: bool

    def __init__(self, pos: int, value: bool) -> None:
        self.pos = pos
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class NumberNode(Node):
    """A numeric or character constant; ``value`` is what Go's idealConstant yields, or ``error``."""

    __slots__ = _fields = ("pos", "text", "value", "error")
    pos: int
    text: str
    value: Any
    error: str | None

    def __init__(self, pos: int, text: str, value: Any, error: str | None = None) -> None:
        self.pos = pos
        self.text = text
        self.value = value
        self.error = error

    def __str__(self) -> str:
        return self.text


class StringNode(Node):
    __slots__ = _fields = ("pos", "quoted", "text")
    pos: int
    quoted: str
    text: str

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        self.pos = pos
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class CommandNode(Node):
    __slots__ = _fields = ("pos", "args")
    pos: int
    args: list[Node]

    def __init__(self, pos: int, args: list[Node] | None = None) -> None:
        self.pos = pos
        self.args = [] if args is None else args

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


class PipeNode(Node):
    __slots__ = _fields = ("pos", "decl", "is_assign", "cmds")
    pos: int
    decl: list[VariableNode]
    is_assign: bool
    cmds: list[CommandNode]

    def __init__(
        self,
        pos: int,
        decl: list[VariableNode] | None = None,
        is_assign: bool = False,
        cmds: list[CommandNode] | None = None,
    ) -> None:
        self.pos = pos
        self.decl = [] if decl is None else decl
        self.is_assign = is_assign
        self.cmds = [] if cmds is None else cmds

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(str(d) for d in self.decl) + (" = " if self.is_assign else " := ")
        return head + " | ".join(str(c) for c in self.cmds)


class ChainNode(Node):
    """A term followed by fields: ``(pipeline).A.B`` or ``func.A``."""

    __slots__ = _fields = ("pos", "node", "fields")
    pos: int
    node: Node
    fields: tuple[str, ...]

    def __init__(self, pos: int, node: Node, fields: tuple[str, ...]) -> None:
        self.pos = pos
        self.node = node
        self.fields = fields

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


class ActionNode(Node):
    __slots__ = _fields = ("pos", "pipe")
    pos: int
    pipe: PipeNode

    def __init__(self, pos: int, pipe: PipeNode) -> None:
        self.pos = pos
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class BranchNode(Node):
    __slots__ = _fields = ("pos", "pipe", "list", "else_list")
    pos: int
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None

    def __init__(self, pos: int, pipe: PipeNode, list: ListNode, else_list: ListNode | None) -> None:
        self.pos = pos
        self.pipe = pipe
        self.list = list
        self.else_list = else_list


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


class TemplateNode(Node):
    __slots__ = _fields = ("pos", "name", "pipe")
    pos: int
    name: str
    pipe: PipeNode | None

    def __init__(self, pos: int, name: str, pipe: PipeNode | None) -> None:
        self.pos = pos
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        return f'{{{{template "{self.name}"' + (f" {self.pipe}" if self.pipe else "") + "}}"


class BreakNode(Node):
    __slots__ = _fields = ("pos",)
    pos: int

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "{{break}}"


class ContinueNode(Node):
    __slots__ = _fields = ("pos",)
    pos: int

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "{{continue}}"


def is_empty_tree(node: Node) -> bool:
    """Go's ``IsEmptyTree``: only whitespace text; such a definition may be replaced by a later one."""
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return not node.text.strip()
    return False
