"""Helpers that read typed values out of a parsed TOML table and collect
located problems (``file:line:col: key path: message``)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import RuleSyntaxError
from gateway.rules._tomlpos import Path, TomlPositions
from gateway.rules.ast import Dim, Expr, Neg, Number
from gateway.rules.compile import Compiled, compile_expr, describe_dim
from gateway.rules.lexer import ExprError

_EXAMPLE = {Dim.DURATION: '"30s" or "1h30m"', Dim.POWER: '"2.4 kW" or "500 W"'}


def key_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


class Problems:
    """Problems of one or more rule files, each with its position."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, int, str, str]] = []  # file, line, col, key, msg

    def add(self, file: str, line: int, col: int, key: str, msg: str) -> None:
        self.items.append((file, line, col, key, msg))

    def raise_if_any(self) -> None:
        """Raises:
        RuleSyntaxError: one entry per problem, located at the first.
        """
        if not self.items:
            return
        order = {f: i for i, f in enumerate(dict.fromkeys(p[0] for p in self.items))}
        items = sorted(self.items, key=lambda p: (order[p[0]], p[1], p[2]))
        file, line, col, _, _ = items[0]
        raise RuleSyntaxError(
            [(f"{f}:{ln}:{c}", k, m) for f, ln, c, k, m in items],
            file=file, line=line, col=col,
        )


class Table:
    """One TOML table of one file, read key by key; unknown keys are reported by ``done``."""

    def __init__(self, data: Mapping[str, Any], path: Path, file: str, pos: TomlPositions,
                 problems: Problems) -> None:
        self.data = data
        self.path = path
        self.file = file
        self.pos = pos
        self.problems = problems
        self.used: set[str] = set()
        self.ok = True

    # ---------------------------------------------------------------- problems
    def problem(self, key: str | int | None, msg: str, index: int | None = None,
                sub: Path = (), *, at_key: bool = False) -> None:
        """Report a problem at the value of ``key`` (or at the key itself)."""
        path = self.path if key is None else (*self.path, key, *sub)
        line, col = self.pos.where(path, index, key=at_key)
        self.problems.add(self.file, line, col, key_path(path), msg)
        self.ok = False

    def place(self, key: str) -> str:
        """``file:line:col`` of ``key``'s value in this table."""
        line, col = self.pos.where((*self.path, key))
        return f"{self.file}:{line}:{col}"

    def done(self, allowed: Collection[str]) -> None:
        for k in self.data:
            if k not in self.used:
                close = difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problem(k, f"unknown key{hint} (expected one of {', '.join(allowed)})",
                             at_key=True)

    # ------------------------------------------------------------------ values
    def has(self, key: str) -> bool:
        self.used.add(key)
        return key in self.data

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def string(self, key: str, *, required: bool = False, default: str = "") -> str:
        v = self.raw(key)
        if v is None:
            if required:
                self.problem(None, f"required key {key!r} is missing")
            return default
        if not isinstance(v, str):
            self.problem(key, f"expected a string, found {type(v).__name__}")
            return default
        return v

    def integer(self, key: str, *, default: int | None, lo: int, hi: int) -> int | None:
        v = self.raw(key)
        if v is None:
            return default
        if not isinstance(v, int) or isinstance(v, bool):
            self.problem(key, f"expected a whole number from {lo} to {hi}")
            return default
        if not lo <= v <= hi:
            self.problem(key, f"expected a whole number from {lo} to {hi}, found {v}")
            return default
        return v

    def boolean(self, key: str, *, default: bool) -> bool:
        v = self.raw(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.problem(key, "expected true or false")
            return default
        return v

    def strings(self, key: str, *, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        v = self.raw(key)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.problem(key, 'expected a list of strings, e.g. ["boiler", "class:ev"]')
            return default
        return tuple(v)

    def quantity(self, key: str, dim: Dim, *, default: float | None, required: bool = False,
                 lo: float | None = None, hi: float | None = None) -> float | None:
        """A constant with a unit (``"30s"``, ``"2.4 kW"``), in the unit of :mod:`.ast`."""
        v = self.raw(key)
        if v is None:
            if required:
                self.problem(None, f"required key {key!r} is missing")
            return default
        example = _EXAMPLE.get(dim, "")
        if not isinstance(v, str):
            self.problem(key, f"expected {describe_dim(dim)} as a string with a unit, "
                              f"e.g. {example}")
            return default
        try:
            c = compile_expr(v, expect=dim, context=f"for {key!r}")
        except ExprError as exc:
            self.problem(key, exc.message, index=exc.pos)
            return default
        if c.constant is None or _unitless(c.tree):
            self.problem(key, f"expected {describe_dim(dim)} with a unit, e.g. {example}")
            return default
        value = c.constant
        if lo is not None and value < lo:
            self.problem(key, f"expected at least {_fmt(lo, dim)}, found {v!r}")
            return default
        if hi is not None and value > hi:
            self.problem(key, f"expected at most {_fmt(hi, dim)}, found {v!r}")
            return default
        return value

    def expression(self, key: str, dim: Dim, load_names: Collection[str], *,
                   required: bool = False) -> Compiled | None:
        v = self.raw(key)
        if v is None:
            if required:
                self.problem(None, f"required key {key!r} is missing")
            return None
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, str):
            example = '"import_power_kw > 5 kW"' if dim is Dim.BOOL else '"4 kW"'
            self.problem(key, f"expected an expression as a string, e.g. {example}")
            return None
        try:
            return compile_expr(v, expect=dim, load_names=load_names, context=f"for {key!r}")
        except ExprError as exc:
            self.problem(key, exc.message, index=exc.pos)
            return None


def _unitless(tree: Expr) -> bool:
    if isinstance(tree, Neg):
        tree = tree.operand
    return isinstance(tree, Number) and tree.dim is Dim.NUMBER


def _fmt(value: float, dim: Dim) -> str:
    if dim is Dim.DURATION:
        return f"{value:g} s"
    if dim is Dim.POWER:
        return f"{value:g} kW"
    return f"{value:g}"
