"""Building the parse tree from tokens, following Go's ``text/template/parse`` rules.

Parse-time checks are Go's: functions must be known (``function "x" not defined``), variables
declared before use, ``break``/``continue`` only inside ``range``, ``define`` only at top level, one
non-empty definition per template name.
"""

from __future__ import annotations

from collections.abc import Container

from pitrix.gotemplate import nodes as n
from pitrix.gotemplate.errors import TemplateError, position
from pitrix.gotemplate.lexer import T, Token, lex
from pitrix.gotemplate.literals import LiteralError, number_constant, unquote


class _End:
    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "{{end}}"


class _Else:
    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __str__(self) -> str:
        return "{{else}}"


_OPERAND_START = frozenset(
    {
        T.BOOL,
        T.CHAR_CONSTANT,
        T.COMPLEX,
        T.DOT,
        T.FIELD,
        T.IDENTIFIER,
        T.NUMBER,
        T.NIL,
        T.RAW_STRING,
        T.STRING,
        T.VARIABLE,
        T.LEFT_PAREN,
    }
)


class Parser:
    """Parses one source text into named trees: the main one under ``name`` plus its definitions."""

    def __init__(self, name: str, text: str, funcs: Container[str]) -> None:
        self.name = name
        self.text = text
        self.funcs = funcs
        self.tokens: list[Token] = lex(name, text)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.trees: dict[str, n.ListNode] = {}

    # -- token access ------------------------------------------------------------------------

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.typ is not T.EOF:
            self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.typ is T.SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        if tok.typ is not T.EOF:
            self.backup()
        return tok

    def error(self, message: str, pos: int | None = None) -> TemplateError:
        if pos is None:
            pos = self.tokens[max(self.i - 1, 0)].pos
        line, col = position(self.text, pos)
        return TemplateError(self.name, line, col, message)

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        return self.error(f"unexpected {tok.describe()} in {context}", tok.pos)

    def expect(self, typ: T, context: str) -> Token:
        tok = self.next_non_space()
        if tok.typ is not typ:
            raise self.unexpected(tok, context)
        return tok

    # -- structure ---------------------------------------------------------------------------

    def parse(self) -> dict[str, n.ListNode]:
        root = n.ListNode(0)
        while self.peek().typ is not T.EOF:
            if self.peek().typ is T.LEFT_DELIM:
                mark = self.i
                self.next()
                if self.next_non_space().typ is T.DEFINE:
                    self.parse_definition()
                    continue
                self.i = mark
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                raise self.error(f"unexpected {node}", node.pos)
            root.nodes.append(node)
        self.add_tree(self.name, root)
        return self.trees

    def add_tree(self, name: str, body: n.ListNode) -> None:
        existing = self.trees.get(name)
        if existing is None or n.is_empty_tree(existing):
            self.trees[name] = body
        elif not n.is_empty_tree(body):
            raise self.error(f'template: multiple definition of template "{name}"', body.pos)

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(tok, context)
        name = self.unquote(tok)
        self.expect(T.RIGHT_DELIM, context)
        body, end = self.in_fresh_scope()
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.add_tree(name, body)

    def in_fresh_scope(self) -> tuple[n.ListNode, _End | _Else]:
        """A definition's or block's body: its own variables (only ``$``), outside any range."""
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        try:
            return self.item_list()
        finally:
            self.vars, self.range_depth = saved

    def item_list(self) -> tuple[n.ListNode, _End | _Else]:
        lst = n.ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ is not T.EOF:
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                return lst, node
            lst.nodes.append(node)
        raise self.error("unexpected EOF", self.peek().pos)

    def text_or_action(self) -> n.Node | _End | _Else:
        tok = self.next_non_space()
        if tok.typ is T.TEXT:
            return n.TextNode(tok.pos, tok.val)
        if tok.typ is T.LEFT_DELIM:
            return self.action()
        raise self.unexpected(tok, "input")

    def action(self) -> n.Node | _End | _Else:
        tok = self.next_non_space()
        typ = tok.typ
        if typ is T.BLOCK:
            return self.block_control()
        if typ is T.BREAK or typ is T.CONTINUE:
            return self.break_control(tok)
        if typ is T.ELSE:
            return self.else_control()
        if typ is T.END:
            return _End(self.expect(T.RIGHT_DELIM, "end").pos)
        if typ is T.IF:
            return n.IfNode(tok.pos, *self.parse_control("if"))
        if typ is T.RANGE:
            return n.RangeNode(tok.pos, *self.parse_control("range"))
        if typ is T.TEMPLATE:
            return self.template_control()
        if typ is T.WITH:
            return n.WithNode(tok.pos, *self.parse_control("with"))
        self.backup()
        return n.ActionNode(tok.pos, self.pipeline("command", T.RIGHT_DELIM))

    def break_control(self, tok: Token) -> n.Node:
        word = "{{" + tok.val + "}}"
        after = self.next_non_space()
        if after.typ is not T.RIGHT_DELIM:
            raise self.unexpected(after, word)
        if self.range_depth == 0:
            raise self.error(f"{word} outside {{{{range}}}}", tok.pos)
        return n.BreakNode(tok.pos) if tok.typ is T.BREAK else n.ContinueNode(tok.pos)

    def else_control(self) -> _Else:
        peek = self.peek_non_space()
        if peek.typ in (T.IF, T.WITH):
            return _Else(peek.pos)
        return _Else(self.expect(T.RIGHT_DELIM, "else").pos)

    def parse_control(self, context: str) -> tuple[n.PipeNode, n.ListNode, n.ListNode | None]:
        nvars = len(self.vars)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list: n.ListNode | None = None
        if isinstance(nxt, _Else):
            if context == "if" and self.peek().typ is T.IF:
                tok = self.next()
                else_list = n.ListNode(nxt.pos, [n.IfNode(tok.pos, *self.parse_control("if"))])
            elif context == "with" and self.peek().typ is T.WITH:
                tok = self.next()
                else_list = n.ListNode(nxt.pos, [n.WithNode(tok.pos, *self.parse_control("with"))])
            else:
                else_list, nxt = self.item_list()
                if not isinstance(nxt, _End):
                    raise self.error(f"expected end; found {nxt}", nxt.pos)
        del self.vars[nvars:]
        return pipe, body, else_list

    def template_name(self, tok: Token, context: str) -> str:
        if tok.typ not in (T.STRING, T.RAW_STRING):
            raise self.unexpected(tok, context)
        return self.unquote(tok)

    def template_control(self) -> n.TemplateNode:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ is not T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return n.TemplateNode(tok.pos, name, pipe)

    def block_control(self) -> n.TemplateNode:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        body, end = self.in_fresh_scope()
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.add_tree(name, body)
        return n.TemplateNode(tok.pos, name, pipe)

    # -- pipelines ---------------------------------------------------------------------------

    def pipeline(self, context: str, end: T) -> n.PipeNode:
        pipe = n.PipeNode(self.peek_non_space().pos)
        while True:  # declarations: "$x :=", "$x =", "$i, $v :="
            v = self.peek_non_space()
            if v.typ is not T.VARIABLE:
                break
            mark = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ is T.ASSIGN
                self.next_non_space()
                pipe.decl.append(n.VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
                break
            if nxt.typ is T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(n.VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            self.i = mark
            break
        while True:
            tok = self.next_non_space()
            if tok.typ is end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ in _OPERAND_START:
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def check_pipeline(self, pipe: n.PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for i, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], (n.BoolNode, n.DotNode, n.NilNode, n.NumberNode, n.StringNode)):
                raise self.error(f"non executable command in pipeline stage {i + 2}", cmd.pos)

    def command(self) -> n.CommandNode:
        cmd = n.CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ is T.SPACE:
                continue
            if tok.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif tok.typ is not T.PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> n.Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ is T.FIELD:
            fields: list[str] = []
            while self.peek().typ is T.FIELD:
                fields.append(self.next().val[1:])
            if isinstance(node, n.FieldNode):
                return n.FieldNode(node.pos, node.idents + tuple(fields))
            if isinstance(node, n.VariableNode):
                return n.VariableNode(node.pos, node.idents + tuple(fields))
            if isinstance(node, (n.BoolNode, n.StringNode, n.NumberNode, n.NilNode, n.DotNode)):
                raise self.error(f'unexpected . after term "{node}"', node.pos)
            return n.ChainNode(node.pos, node, tuple(fields))
        return node

    def term(self) -> n.Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ is T.IDENTIFIER:
            if tok.val not in self.funcs:
                raise self.error(f'function "{tok.val}" not defined', tok.pos)
            return n.IdentifierNode(tok.pos, tok.val)
        if typ is T.DOT:
            return n.DotNode(tok.pos)
        if typ is T.NIL:
            return n.NilNode(tok.pos)
        if typ is T.VARIABLE:
            if tok.val not in self.vars:
                raise self.error(f'undefined variable "{tok.val}"', tok.pos)
            return n.VariableNode(tok.pos, (tok.val,))
        if typ is T.FIELD:
            return n.FieldNode(tok.pos, (tok.val[1:],))
        if typ is T.BOOL:
            return n.BoolNode(tok.pos, tok.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            try:
                value, err = number_constant(tok.val)
            except LiteralError as exc:
                raise self.error(str(exc), tok.pos) from None
            return n.NumberNode(tok.pos, tok.val, value, err)
        if typ is T.LEFT_PAREN:
            return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
        if typ in (T.STRING, T.RAW_STRING):
            return n.StringNode(tok.pos, tok.val, self.unquote(tok))
        self.backup()
        return None

    def unquote(self, tok: Token) -> str:
        try:
            return unquote(tok.val)
        except LiteralError as exc:
            raise self.error(f"{exc}: {tok.val}", tok.pos) from None
