"""Recursive-descent parser: expression text to the frozen tree of :mod:`.ast`.

Grammar, loosest binding first::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum ( (("<"|"<="|">"|">="|"=="|"!=") sum)+
                      | ["not"] "in" "[" expr ("," expr)* [","] "]" )?
    sum        := product (("+"|"-") product)*
    product    := unary (("*"|"/") unary)*
    unary      := ("-"|"+") unary | atom
    atom       := NUMBER [unit | "%"] | DURATION | TIME | STRING | "true" | "false"
                | NAME "(" [expr ("," expr)*] ")" | NAME | "(" expr ")"
    unit       := "W" | "kW" | "MW" | "Wh" | "kWh" | "MWh" | "ms" | "s" | "m" | "min" | "h" | "d"

Comparisons chain as in Python (``06:00 <= time < 09:00``).  Nothing is
evaluated here; names and function calls are checked against the namespace
by :mod:`gateway.rules.compile`.
"""

from __future__ import annotations

import difflib
from typing import Literal, cast

from gateway.rules.ast import (
    BinOp,
    BoolLit,
    BoolOp,
    Call,
    Compare,
    Dim,
    Expr,
    In,
    Name,
    Neg,
    Not,
    Number,
    StringLit,
)
from gateway.rules.lexer import DURATION_UNITS, ExprError, Token, tokenize

__all__ = ["KEYWORDS", "UNITS", "parse"]

#: Unit word -> (dimension, factor to the dimension's unit).
UNITS: dict[str, tuple[Dim, float]] = {
    "W": (Dim.POWER, 0.001),
    "kW": (Dim.POWER, 1.0),
    "MW": (Dim.POWER, 1000.0),
    "Wh": (Dim.ENERGY, 0.001),
    "kWh": (Dim.ENERGY, 1.0),
    "MWh": (Dim.ENERGY, 1000.0),
    **{u: (Dim.DURATION, f) for u, f in DURATION_UNITS.items()},
}

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})

_CMP_OPS = ("<", "<=", ">", ">=", "==", "!=")


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the expression"
    if tok.kind == "str":
        return f"the string {tok.text!r}"
    return repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def _next(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _is(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def _expect_op(self, text: str, what: str) -> Token:
        if not self._is("op", text):
            raise ExprError(f"expected {what}, found {_describe(self.tok)}", self.tok.pos)
        return self._next()

    # ------------------------------------------------------------------ rules
    def parse(self) -> Expr:
        if self.tok.kind == "eof":
            raise ExprError("expected an expression, found nothing", self.tok.pos)
        e = self.expr()
        t = self.tokens[self.i]
        if t.kind != "eof":
            if t.kind == "name" and t.text not in KEYWORDS:
                hint = f"expected an operator such as 'and' or '>', found {_describe(t)}"
            else:
                hint = f"expected an operator or the end of the expression, found {_describe(t)}"
            raise ExprError(hint, t.pos)
        return e

    def expr(self) -> Expr:
        first = self.and_expr()
        parts = [first]
        while self._is("name", "or"):
            self._next()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return first
        return BoolOp(pos=first.pos, end=parts[-1].end, op="or", operands=tuple(parts))

    def and_expr(self) -> Expr:
        first = self.not_expr()
        parts = [first]
        while self._is("name", "and"):
            self._next()
            parts.append(self.not_expr())
        if len(parts) == 1:
            return first
        return BoolOp(pos=first.pos, end=parts[-1].end, op="and", operands=tuple(parts))

    def not_expr(self) -> Expr:
        if self._is("name", "not"):
            t = self._next()
            operand = self.not_expr()
            return Not(pos=t.pos, end=operand.end, operand=operand)
        return self.comparison()

    def comparison(self) -> Expr:
        first = self.sum()
        if self._is("name", "in") or (
            self._is("name", "not")
            and self.tokens[self.i + 1].kind == "name"
            and self.tokens[self.i + 1].text == "in"
        ):
            negated = self._next().text == "not"
            if negated:
                self._next()
            self._expect_op("[", "'[' to start the list after 'in'")
            options: list[Expr] = []
            while True:
                if self._is("op", "]") and options:
                    break
                options.append(self.expr())
                if self._is("op", ","):
                    self._next()
                    continue
                break
            close = self._expect_op("]", "',' or ']' in the list")
            return In(pos=first.pos, end=close.end, item=first, options=tuple(options),
                      negated=negated)
        ops: list[str] = []
        operands = [first]
        while self.tok.kind == "op" and self.tok.text in _CMP_OPS:
            ops.append(self._next().text)
            operands.append(self.sum())
        if not ops:
            return first
        return Compare(
            pos=first.pos,
            end=operands[-1].end,
            ops=cast(tuple[Literal["<", "<=", ">", ">=", "==", "!="], ...], tuple(ops)),
            operands=tuple(operands),
        )

    def sum(self) -> Expr:
        left = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = cast(Literal["+", "-"], self._next().text)
            right = self.product()
            left = BinOp(pos=left.pos, end=right.end, op=op, left=left, right=right)
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = cast(Literal["*", "/"], self._next().text)
            right = self.unary()
            left = BinOp(pos=left.pos, end=right.end, op=op, left=left, right=right)
        return left

    def unary(self) -> Expr:
        if self._is("op", "-"):
            t = self._next()
            operand = self.unary()
            return Neg(pos=t.pos, end=operand.end, operand=operand)
        if self._is("op", "+"):
            self._next()
            return self.unary()
        return self.atom()

    def atom(self) -> Expr:
        t = self.tok
        if t.kind == "num":
            self._next()
            return self._unit(t)
        if t.kind == "dur":
            self._next()
            return Number(pos=t.pos, end=t.end, value=t.value, dim=Dim.DURATION)
        if t.kind == "time":
            self._next()
            return Number(pos=t.pos, end=t.end, value=t.value, dim=Dim.TIME)
        if t.kind == "str":
            self._next()
            return StringLit(pos=t.pos, end=t.end, value=t.text)
        if t.kind == "op" and t.text == "(":
            self._next()
            inner = self.expr()
            self._expect_op(")", "')' to close the '('")
            return inner
        if t.kind == "name":
            if t.text in ("true", "false"):
                self._next()
                return BoolLit(pos=t.pos, end=t.end, value=t.text == "true")
            if t.text in KEYWORDS:
                raise ExprError(f"expected a value before {t.text!r}", t.pos)
            self._next()
            if self._is("op", "("):
                return self._call(t)
            return Name(pos=t.pos, end=t.end, name=t.text)
        raise ExprError(f"expected a value (number, name, '(' ...), found {_describe(t)}", t.pos)

    def _unit(self, num: Token) -> Expr:
        nxt = self.tok
        if nxt.kind == "op" and nxt.text == "%":
            self._next()
            return Number(pos=num.pos, end=nxt.end, value=num.value, dim=Dim.NUMBER)
        if nxt.kind == "name" and nxt.text not in KEYWORDS:
            unit = UNITS.get(nxt.text)
            if unit is None:
                ci = [u for u in UNITS if u.lower() == nxt.text.lower()]
                close = ci or difflib.get_close_matches(nxt.text, list(UNITS), n=1, cutoff=0.6)
                if not close:
                    # Not meant as a unit (``3 price``): the caller reports the
                    # missing operator.
                    return Number(pos=num.pos, end=num.end, value=num.value, dim=Dim.NUMBER)
                raise ExprError(
                    f"unknown unit {nxt.text!r} (expected one of {', '.join(UNITS)}); "
                    f"did you mean {close[0]!r}?",
                    nxt.pos,
                )
            self._next()
            dim, factor = unit
            return Number(pos=num.pos, end=nxt.end, value=num.value * factor, dim=dim)
        return Number(pos=num.pos, end=num.end, value=num.value, dim=Dim.NUMBER)

    def _call(self, name: Token) -> Expr:
        self._next()  # "("
        args: list[Expr] = []
        if not self._is("op", ")"):
            while True:
                args.append(self.expr())
                if self._is("op", ","):
                    self._next()
                    continue
                break
        close = self._expect_op(")", f"',' or ')' in the arguments of {name.text}()")
        return Call(pos=name.pos, end=close.end, func=name.text, args=tuple(args))


def parse(text: str) -> Expr:
    """Parse one expression.

    Raises:
        ExprError: with the offset of the offending character and what was expected.
    """
    return _Parser(text).parse()
