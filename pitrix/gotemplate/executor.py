"""Running a parsed template against data, with Go's ``text/template`` execution semantics.

One ``State`` per execution: the output buffer, the variable stack (``$`` first; declarations pushed
and popped with their control structure), and the template-call depth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from types import FunctionType, MethodType
from typing import Any

from pitrix.gotemplate import nodes as n
from pitrix.gotemplate.builtins import BUILTINS, and_, or_
from pitrix.gotemplate.errors import TemplateError, position
from pitrix.gotemplate.gofmt import sprint_value
from pitrix.gotemplate.limits import INT64, Limits
from pitrix.gotemplate.values import go_type_name, is_int, is_struct, sort_keys, truth

MAX_TEMPLATE_DEPTH = 64


class _Missing:
    """No value flowed in from a previous pipeline stage (distinct from nil)."""

    __slots__ = ()


MISSING: Any = _Missing()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_NO_FIELDS = (str, bytes, int, float, complex, bool, list, tuple)

Arity = tuple[int, int | None]


# CPython's code flag for a ``*args`` parameter.
_CO_VARARGS = 0x04


def arity_of(fn: Callable[..., Any]) -> Arity | None:
    """(min, max) positional arguments ``fn`` takes; ``None`` when it cannot be told.

    A plain function's are read from its code object, as ``inspect.signature`` reads them (what
    a template calls is nearly always one); anything else (a bound method, a partial, a wrapped or
    builtin function) is asked of ``inspect``, loaded only then: a one-shot render needs nothing
    else of it.
    """
    bound = type(fn) is MethodType
    func = fn.__func__ if bound else fn  # type: ignore[attr-defined]
    if type(func) is FunctionType and not hasattr(func, "__wrapped__") and not hasattr(fn, "__signature__"):
        code = func.__code__
        hi = code.co_argcount
        lo = hi - len(func.__defaults__ or ())
        if bound and hi:  # the first parameter is the bound object
            hi, lo = hi - 1, max(lo - 1, 0)
            return (lo, None) if code.co_flags & _CO_VARARGS else (lo, hi)
        if not bound:
            return (lo, None) if code.co_flags & _CO_VARARGS else (lo, hi)
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    lo, hi = 0, 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo += 1
        elif p.kind is p.VAR_POSITIONAL:
            return lo, None
    return lo, hi


class State:
    """One execution of a template."""

    def __init__(
        self,
        name: str,
        text: str,
        trees: Mapping[str, n.ListNode],
        funcs: Mapping[str, Callable[..., Any]],
        arities: dict[Any, Arity | None],
        limits: Limits | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self.trees = trees
        self.funcs = funcs
        self.arities = arities
        self.out: list[str] = []
        self.limits = limits if limits is not None else Limits()
        self.written = 0  # characters in ``out``, checked against the output cap on every write
        self.give_up_at = time.monotonic() + self.limits.deadline
        self.vars: list[list[Any]] = []
        self.depth = 0
        self.walkers: dict[type, Callable[[Any, Any], None]] = {
            n.ListNode: self.walk_list,
            n.TextNode: self.walk_text,
            n.ActionNode: self.walk_action,
            n.IfNode: self.walk_if_or_with,
            n.WithNode: self.walk_if_or_with,
            n.RangeNode: self.walk_range,
            n.TemplateNode: self.walk_template,
            n.BreakNode: self.walk_break,
            n.ContinueNode: self.walk_continue,
        }

    # -- errors and variables ----------------------------------------------------------------

    def error(self, node: n.Node, message: str) -> TemplateError:
        line, col = position(self.text, node.pos)
        return TemplateError(self.name, line, col, message)

    def push(self, name: str, value: Any) -> None:
        self.vars.append([name, value])

    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def set_top_var(self, n_: int, value: Any) -> None:
        self.vars[-n_][1] = value

    def set_var(self, node: n.Node, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise self.error(node, f"undefined variable: {name}")

    def var_value(self, node: n.Node, name: str) -> Any:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        raise self.error(node, f"undefined variable: {name}")

    # -- walking -----------------------------------------------------------------------------

    def run(self, root: n.ListNode, data: Any) -> str:
        self.push("$", data)
        self.walk(data, root)
        return "".join(self.out)

    def walk(self, dot: Any, node: n.Node) -> None:
        self.walkers[type(node)](dot, node)

    def walk_list(self, dot: Any, node: n.ListNode) -> None:
        walkers = self.walkers
        for child in node.nodes:
            walkers[type(child)](dot, child)

    def walk_text(self, dot: Any, node: n.TextNode) -> None:
        self.emit(node, node.text)

    def emit(self, node: n.Node, text: str) -> None:
        self.written += len(text)
        if self.written > self.limits.max_output:
            raise self.error(node, f"output exceeds the limit of {self.limits.max_output} characters")
        self.out.append(text)

    def tick(self, node: n.Node) -> None:
        """Give up once the render has run past its deadline (called wherever work can repeat)."""
        if time.monotonic() > self.give_up_at:
            raise self.error(node, f"render exceeded its deadline of {self.limits.deadline:g} s")

    def walk_action(self, dot: Any, node: n.ActionNode) -> None:
        value = self.eval_pipeline(dot, node.pipe)
        if not node.pipe.decl:
            self.print_value(node, value)

    def walk_break(self, dot: Any, node: n.BreakNode) -> None:
        raise _Break

    def walk_continue(self, dot: Any, node: n.ContinueNode) -> None:
        raise _Continue

    def print_value(self, node: n.Node, value: Any) -> None:
        if isinstance(value, str):
            self.emit(node, value)
        elif value is None:
            self.emit(node, "<no value>")
        elif callable(value) and not hasattr(value, "String") and not is_struct(value):
            raise self.error(node, f"can't print {node} of type {go_type_name(value)}")
        else:
            self.emit(node, sprint_value(value))

    def walk_if_or_with(self, dot: Any, node: n.BranchNode) -> None:
        mark = self.mark()
        try:
            value = self.eval_pipeline(dot, node.pipe)
            if truth(value):
                self.walk(value if isinstance(node, n.WithNode) else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            self.pop(mark)

    def walk_range(self, dot: Any, node: n.RangeNode) -> None:
        mark = self.mark()
        try:
            value = self.eval_pipeline(dot, node.pipe)
            count, items = self.range_items(node, value)
            if not count:
                if node.else_list is not None:
                    self.walk(dot, node.else_list)
                return
            inner = self.mark()
            decl = node.pipe.decl
            assign = node.pipe.is_assign
            for key, elem in items:
                self.tick(node)
                if decl:
                    if assign:
                        self.set_var(node, decl[0].idents[0], key if len(decl) > 1 else elem)
                    else:
                        self.set_top_var(1, elem)
                if len(decl) > 1:
                    if assign:
                        self.set_var(node, decl[1].idents[0], elem)
                    else:
                        self.set_top_var(2, key)
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    self.pop(inner)
        finally:
            self.pop(mark)

    def range_items(self, node: n.RangeNode, value: Any) -> tuple[int, Iterable[tuple[Any, Any]]]:
        """How many (key, element) pairs the range walks, and the pairs, made as it walks (a
        million-element list is walked without building a million tuples first)."""
        if value is None:
            return 0, ()
        if isinstance(value, (list, tuple)):
            return len(value), enumerate(value)
        if isinstance(value, dict):
            return len(value), [(k, value[k]) for k in sort_keys(list(value))]
        if is_int(value):
            if len(node.pipe.decl) > 1:
                raise self.error(node, f"can't use {value} to iterate over more than one variable")
            if value > self.limits.max_items:
                raise self.error(
                    node, f"range over {value} exceeds the limit of {self.limits.max_items} iterations"
                )
            return max(value, 0), ((i, i) for i in range(value))
        raise self.error(node, f"range can't iterate over {sprint_value(value)}")

    def walk_template(self, dot: Any, node: n.TemplateNode) -> None:
        tree = self.trees.get(node.name)
        if tree is None:
            raise self.error(node, f'template "{node.name}" not defined')
        if self.depth >= MAX_TEMPLATE_DEPTH:
            raise self.error(node, f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        self.tick(node)
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        saved_vars = self.vars
        self.vars = [["$", new_dot]]
        self.depth += 1
        try:
            self.walk(new_dot, tree)
        finally:
            self.vars = saved_vars
            self.depth -= 1

    # -- evaluation --------------------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: n.PipeNode) -> Any:
        value = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var, var.idents[0], value)
            else:
                self.push(var.idents[0], value)
        return value

    def not_a_function(self, node: n.Node, args: list[n.Node], final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            raise self.error(node, f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, n.FieldNode):
            return self.eval_field_chain(dot, dot, first, first.idents, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first, cmd.args, final)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(first, cmd.args, final)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.PipeNode):
            self.not_a_function(first, cmd.args, final)
            return self.eval_pipeline(dot, first)
        self.not_a_function(first, cmd.args, final)
        if isinstance(first, n.StringNode):
            return first.text
        if isinstance(first, n.DotNode):
            return dot
        if isinstance(first, n.BoolNode):
            return first.value
        if isinstance(first, n.NumberNode):
            return self.number(first)
        if isinstance(first, n.NilNode):
            raise self.error(first, "nil is not a command")
        raise self.error(first, f"can't evaluate command {first}")  # pragma: no cover

    def number(self, node: n.NumberNode) -> Any:
        if node.error is not None:
            raise self.error(node, node.error)
        return node.value

    def eval_arg(self, dot: Any, node: n.Node) -> Any:
        if isinstance(node, n.StringNode):
            return node.text
        if isinstance(node, n.VariableNode):
            return self.eval_variable(node, [node], MISSING)
        if isinstance(node, n.FieldNode):
            return self.eval_field_chain(dot, dot, node, node.idents, [node], MISSING)
        if isinstance(node, n.DotNode):
            return dot
        if isinstance(node, n.PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, n.IdentifierNode):
            return self.eval_function(dot, node, [node], MISSING)
        if isinstance(node, n.ChainNode):
            return self.eval_chain(dot, node, [node], MISSING)
        if isinstance(node, n.NumberNode):
            return self.number(node)
        if isinstance(node, n.BoolNode):
            return node.value
        if isinstance(node, n.NilNode):
            return None
        raise self.error(node, f"can't handle {node} as an argument")  # pragma: no cover

    def eval_variable(self, node: n.VariableNode, args: list[n.Node], final: Any) -> Any:
        value = self.var_value(node, node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(node, args, final)
            return value
        return self.eval_field_chain(None, value, node, node.idents[1:], args, final)

    def eval_chain(self, dot: Any, chain: n.ChainNode, args: list[n.Node], final: Any) -> Any:
        if isinstance(chain.node, n.NilNode):
            raise self.error(chain, f"indirection through explicit nil in {chain}")
        receiver = self.eval_arg(dot, chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.fields, args, final)

    def eval_field_chain(
        self, dot: Any, receiver: Any, node: n.Node, idents: tuple[str, ...], args: list[n.Node], final: Any
    ) -> Any:
        last = len(idents) - 1
        for i, name in enumerate(idents):
            if i < last:
                receiver = self.eval_field(dot, node, name, receiver, [node], MISSING)
            else:
                receiver = self.eval_field(dot, node, name, receiver, args, final)
        return receiver

    def eval_field(
        self, dot: Any, node: n.Node, name: str, receiver: Any, args: list[n.Node], final: Any
    ) -> Any:
        if receiver is None:
            return None
        has_args = len(args) > 1 or final is not MISSING
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(node, f"{name} is not a method but has arguments")
            return receiver.get(name)
        if isinstance(receiver, _NO_FIELDS) or name.startswith("_"):
            raise self.error(node, f"can't evaluate field {name} in type {go_type_name(receiver)}")
        attr = getattr(receiver, name, MISSING)
        if attr is MISSING:
            raise self.error(node, f"can't evaluate field {name} in type {go_type_name(receiver)}")
        if callable(attr) and not (is_struct(receiver) and name in receiver.__dataclass_fields__):
            return self.call(dot, node, name, attr, args, final)
        if has_args:
            raise self.error(node, f"{name} has arguments but cannot be invoked as function")
        return attr

    def eval_function(self, dot: Any, node: n.IdentifierNode, args: list[n.Node], final: Any) -> Any:
        name = node.name
        fn = self.funcs.get(name)
        if fn is None:
            fn = BUILTINS.get(name)
            if fn is None:
                raise self.error(node, f'"{name}" is not a defined function')
            if fn is and_ or fn is or_:
                return self.eval_and_or(dot, node, name, args, final)
        return self.call(dot, node, name, fn, args, final)

    def eval_and_or(self, dot: Any, node: n.Node, name: str, args: list[n.Node], final: Any) -> Any:
        if len(args) < 2 and final is MISSING:
            raise self.error(node, f"wrong number of args for {name}: want at least 1 got 0")
        want = name == "or"
        value: Any = None
        for arg in args[1:]:
            value = self.eval_arg(dot, arg)
            if truth(value) == want:
                return value
        if final is not MISSING:
            return final
        return value

    def check_arity(self, node: n.Node, name: str, fn: Callable[..., Any], count: int) -> None:
        key = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None) or fn
        try:
            arity = self.arities[key]
        except KeyError:
            arity = self.arities[key] = arity_of(fn)
        except TypeError:  # unhashable callable object
            arity = arity_of(fn)
        if arity is None:
            return
        lo, hi = arity
        if hi is None:
            if count < lo:
                raise self.error(node, f"wrong number of args for {name}: want at least {lo} got {count}")
        elif not lo <= count <= hi:
            want = str(hi) if lo == hi else f"{lo} to {hi}"
            raise self.error(node, f"wrong number of args for {name}: want {want} got {count}")

    def call(
        self, dot: Any, node: n.Node, name: str, fn: Callable[..., Any], args: list[n.Node], final: Any
    ) -> Any:
        argv = [self.eval_arg(dot, a) for a in args[1:]]
        if final is not MISSING:
            argv.append(final)
        self.check_arity(node, name, fn, len(argv))
        self.tick(node)
        try:
            result = fn(*argv)
        except TemplateError:
            raise
        except RecursionError:
            raise
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            raise self.error(node, f"{name}: {message}") from None
        self.check_result(node, name, result)
        return result

    def check_result(self, node: n.Node, name: str, result: Any) -> None:
        """A function's result within the limits: a value that grows step by step (a variable
        re-assigned in a range) is stopped at the first step past a limit, not after it filled memory."""
        limits = self.limits
        if isinstance(result, str):
            if len(result) > limits.max_value:
                raise self.error(
                    node,
                    f"{name}: result of {len(result)} characters exceeds the limit of {limits.max_value}",
                )
        elif isinstance(result, (list, tuple, dict)):
            if len(result) > limits.max_items:
                raise self.error(
                    node, f"{name}: result of {len(result)} elements exceeds the limit of {limits.max_items}"
                )
        elif is_int(result) and not INT64[0] <= result <= INT64[1]:
            raise self.error(node, f"{name}: integer overflow (the result is beyond 64 bits)")
