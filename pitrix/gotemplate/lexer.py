"""Splitting template text into tokens, as Go's text/template lexer does.

The token stream keeps Go's details that change output or meaning: ``{{-`` and ``-}}`` trim all
adjacent whitespace (only when the dash is separated by a space: ``{{-3}}`` is the number -3),
comments vanish with their delimiters, and spaces inside actions are tokens because they separate
a command's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from pitrix.gotemplate.errors import TemplateError, position
from pitrix.gotemplate.gofmt import quote


class T(Enum):
    """Token kinds."""

    TEXT = auto()
    LEFT_DELIM = auto()
    RIGHT_DELIM = auto()
    SPACE = auto()
    IDENTIFIER = auto()
    FIELD = auto()
    VARIABLE = auto()
    DOT = auto()
    NUMBER = auto()
    COMPLEX = auto()
    CHAR_CONSTANT = auto()
    STRING = auto()
    RAW_STRING = auto()
    BOOL = auto()
    NIL = auto()
    PIPE = auto()
    ASSIGN = auto()
    DECLARE = auto()
    LEFT_PAREN = auto()
    RIGHT_PAREN = auto()
    CHAR = auto()
    EOF = auto()
    # keywords
    BLOCK = auto()
    BREAK = auto()
    CONTINUE = auto()
    DEFINE = auto()
    ELSE = auto()
    END = auto()
    IF = auto()
    RANGE = auto()
    TEMPLATE = auto()
    WITH = auto()


KEYWORDS = {
    "block": T.BLOCK,
    "break": T.BREAK,
    "continue": T.CONTINUE,
    "define": T.DEFINE,
    "else": T.ELSE,
    "end": T.END,
    "if": T.IF,
    "range": T.RANGE,
    "nil": T.NIL,
    "template": T.TEMPLATE,
    "with": T.WITH,
}

LEFT = "{{"
RIGHT = "}}"
SPACE_CHARS = " \t\r\n"


@dataclass(slots=True)
class Token:
    """One lexeme and where it starts (a docstring also spares ``dataclass`` an inspect call)."""

    typ: T
    val: str
    pos: int

    def describe(self) -> str:
        """The token as Go's parser names it in "unexpected X" errors."""
        if self.typ is T.EOF:
            return "EOF"
        if self.typ in _KEYWORD_TYPES:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return quote(self.val[:10]) + "..."
        return quote(self.val)


_KEYWORD_TYPES = frozenset(t for w, t in KEYWORDS.items() if w != "nil")


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


def _has_left_trim(s: str, i: int) -> bool:
    return i + 1 < len(s) and s[i] == "-" and s[i + 1] in SPACE_CHARS


def _has_right_trim(s: str, i: int) -> bool:
    return i + 1 < len(s) and s[i] in SPACE_CHARS and s[i + 1] == "-"


class Lexer:
    """Turns template text into a list of tokens (the parser looks ahead and backs up freely)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.tokens: list[Token] = []
        self.paren_depth = 0

    def error(self, pos: int, message: str) -> TemplateError:
        line, col = position(self.text, pos)
        return TemplateError(self.name, line, col, message)

    def emit(self, typ: T, start: int, end: int) -> None:
        self.tokens.append(Token(typ, self.text[start:end], start))

    def run(self) -> list[Token]:
        s = self.text
        i = 0
        n = len(s)
        while True:
            j = s.find(LEFT, i)
            if j < 0:
                if i < n:
                    self.emit(T.TEXT, i, n)
                self.tokens.append(Token(T.EOF, "", n))
                return self.tokens
            text_end = j
            trim = _has_left_trim(s, j + 2)
            if trim:
                while text_end > i and s[text_end - 1] in SPACE_CHARS:
                    text_end -= 1
            if text_end > i:
                self.emit(T.TEXT, i, text_end)
            i = self.lex_action(j, trim)

    def at_right_delim(self, i: int) -> tuple[bool, bool]:
        s = self.text
        if _has_right_trim(s, i) and s.startswith(RIGHT, i + 2):
            return True, True
        if s.startswith(RIGHT, i):
            return True, False
        return False, False

    def skip_trim(self, i: int) -> int:
        s = self.text
        while i < len(s) and s[i] in SPACE_CHARS:
            i += 1
        return i

    def lex_action(self, start: int, trim: bool) -> int:
        """Lex from ``{{`` at ``start`` through the matching ``}}``; returns the position after it."""
        s = self.text
        i = start + 2 + (2 if trim else 0)
        if s.startswith("/*", i):
            close = s.find("*/", i + 2)
            if close < 0:
                raise self.error(start, "unclosed comment")
            i = close + 2
            delim, trim_right = self.at_right_delim(i)
            if not delim:
                raise self.error(start, "comment ends before closing delimiter")
            i += (2 if trim_right else 0) + 2
            return self.skip_trim(i) if trim_right else i
        self.emit(T.LEFT_DELIM, start, start + 2)
        self.paren_depth = 0
        n = len(s)
        while True:
            delim, trim_right = self.at_right_delim(i)
            if delim:
                if self.paren_depth:
                    raise self.error(i, "unclosed left paren")
                if trim_right:
                    i += 2
                self.emit(T.RIGHT_DELIM, i, i + 2)
                i += 2
                return self.skip_trim(i) if trim_right else i
            if i >= n:
                raise self.error(start, "unclosed action")
            c = s[i]
            if c in SPACE_CHARS:
                i = self.lex_space(i)
            elif c == "=":
                self.emit(T.ASSIGN, i, i + 1)
                i += 1
            elif c == ":":
                if not s.startswith(":=", i):
                    raise self.error(i, "expected :=")
                self.emit(T.DECLARE, i, i + 2)
                i += 2
            elif c == "|":
                self.emit(T.PIPE, i, i + 1)
                i += 1
            elif c == '"':
                i = self.lex_quote(i, '"', T.STRING, "unterminated quoted string")
            elif c == "'":
                i = self.lex_quote(i, "'", T.CHAR_CONSTANT, "unterminated character constant")
            elif c == "`":
                close = s.find("`", i + 1)
                if close < 0:
                    raise self.error(i, "unterminated raw quoted string")
                self.emit(T.RAW_STRING, i, close + 1)
                i = close + 1
            elif c == "$":
                i = self.lex_field_or_variable(i, T.VARIABLE)
            elif c == "." and not (i + 1 < n and s[i + 1] in "0123456789"):
                i = self.lex_field_or_variable(i, T.FIELD)
            elif c in "+-.0123456789":
                i = self.lex_number(i)
            elif _is_alnum(c):
                i = self.lex_identifier(i)
            elif c == "(":
                self.emit(T.LEFT_PAREN, i, i + 1)
                self.paren_depth += 1
                i += 1
            elif c == ")":
                self.emit(T.RIGHT_PAREN, i, i + 1)
                self.paren_depth -= 1
                if self.paren_depth < 0:
                    raise self.error(i, "unexpected right paren")
                i += 1
            elif ord(c) < 0x80 and c.isprintable():
                self.emit(T.CHAR, i, i + 1)
                i += 1
            else:
                raise self.error(i, f"unrecognized character in action: {_unicode_name(c)}")

    def lex_space(self, i: int) -> int:
        s = self.text
        start = i
        while i < len(s) and s[i] in SPACE_CHARS:
            i += 1
        # A space directly before "-}}" belongs to the trim marker.
        if _has_right_trim(s, i - 1) and s.startswith(RIGHT, i + 1):
            i -= 1
            if i == start:
                return i
        self.emit(T.SPACE, start, i)
        return i

    def lex_quote(self, i: int, q: str, typ: T, message: str) -> int:
        s = self.text
        j = i + 1
        while True:
            if j >= len(s) or s[j] == "\n":
                raise self.error(i, message)
            c = s[j]
            if c == "\\":
                if j + 1 >= len(s) or s[j + 1] == "\n":
                    raise self.error(i, message)
                j += 2
                continue
            j += 1
            if c == q:
                break
        self.emit(typ, i, j)
        return j

    def at_terminator(self, i: int) -> bool:
        s = self.text
        if i >= len(s):
            return True
        c = s[i]
        return c in SPACE_CHARS or c in ".,|:()" or s.startswith(RIGHT, i)

    def lex_field_or_variable(self, i: int, typ: T) -> int:
        start = i
        i += 1
        if self.at_terminator(i):
            self.emit(T.VARIABLE if typ is T.VARIABLE else T.DOT, start, i)
            return i
        s = self.text
        while i < len(s) and _is_alnum(s[i]):
            i += 1
        if not self.at_terminator(i):
            raise self.error(i, f"bad character {_unicode_name(s[i])}")
        self.emit(typ, start, i)
        return i

    def lex_identifier(self, i: int) -> int:
        s = self.text
        start = i
        while i < len(s) and _is_alnum(s[i]):
            i += 1
        if not self.at_terminator(i):
            raise self.error(i, f"bad character {_unicode_name(s[i])}")
        word = s[start:i]
        if word in KEYWORDS:
            self.emit(KEYWORDS[word], start, i)
        elif word in ("true", "false"):
            self.emit(T.BOOL, start, i)
        else:
            self.emit(T.IDENTIFIER, start, i)
        return i

    def scan_number(self, i: int) -> tuple[bool, int]:
        s = self.text
        n = len(s)

        def accept(chars: str, j: int) -> int:
            return j + 1 if j < n and s[j] in chars else j

        def accept_run(chars: str, j: int) -> int:
            while j < n and s[j] in chars:
                j += 1
            return j

        i = accept("+-", i)
        digits = "0123456789_"
        if i < n and s[i] == "0":
            i += 1
            if i < n and s[i] in "xX":
                i, digits = i + 1, "0123456789abcdefABCDEF_"
            elif i < n and s[i] in "oO":
                i, digits = i + 1, "01234567_"
            elif i < n and s[i] in "bB":
                i, digits = i + 1, "01_"
        i = accept_run(digits, i)
        if i < n and s[i] == ".":
            i = accept_run(digits, i + 1)
        if len(digits) == 11 and i < n and s[i] in "eE":
            i = accept_run("0123456789_", accept("+-", i + 1))
        if len(digits) == 23 and i < n and s[i] in "pP":
            i = accept_run("0123456789_", accept("+-", i + 1))
        i = accept("i", i)
        if i < n and _is_alnum(s[i]):
            return False, i + 1
        return True, i

    def lex_number(self, i: int) -> int:
        start = i
        ok, i = self.scan_number(i)
        if not ok:
            raise self.error(start, f"bad number syntax: {quote(self.text[start:i])}")
        s = self.text
        if i < len(s) and s[i] in "+-":
            ok, i = self.scan_number(i)
            if not ok or s[i - 1] != "i":
                raise self.error(start, f"bad number syntax: {quote(s[start:i])}")
            self.emit(T.COMPLEX, start, i)
        else:
            self.emit(T.NUMBER, start, i)
        return i


def _unicode_name(c: str) -> str:
    """Go's ``%#U``: ``U+0021 '!'``."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


def lex(name: str, text: str) -> list[Token]:
    return Lexer(name, text).run()
