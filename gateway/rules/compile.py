"""Check an expression tree against the namespace and turn it into closures.

Checking happens once, when the rule file is loaded: every name must exist
(:data:`gateway.rules.state.NAMESPACE`, ``meter.<key>``, ``load.<name>.<attr>``
of a configured load), every function must be known and get the right
arguments, and dimensions must fit: ``import_power_kw > 5 kWh`` is refused
("expected a power, found an energy").  A bare number fits any dimension and
is read in its unit (``import_power_kw > 5`` means 5 kW).

Functions:

- ``avg(x, 5m)``, ``min(x, 5m)``, ``max(x, 5m)``: time-weighted mean, lowest
  and highest value of series ``x`` over the last 5 minutes (the window must
  be a constant, at most 1 day, so memory stays bounded);
- ``min(a, b, ...)``, ``max(a, b, ...)``, ``abs(x)``, ``clamp(x, lo, hi)``;
- ``time_between(22:00, 06:00)``: the local time of day lies in
  ``[from, to)``, wrapping past midnight when ``from > to``;
- ``known(x)``: whether the value ``x`` is available now.

Evaluation: a value that is not available (no price yet, a quantity the meter
does not send, a division by zero) raises :class:`~gateway.rules.state.Missing`;
``and``/``or`` decide without it where the other side suffices (``false and
?`` is false, ``true or ?`` is true), and the engine treats a condition that
stays unknown as false.  The closures call nothing but arithmetic and the
frame's lookups: there is no ``eval``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from dataclasses import dataclass

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
from gateway.rules.lexer import ExprError
from gateway.rules.parser import parse
from gateway.rules.state import (
    CONSTANTS,
    LOAD_ATTRS,
    NAMESPACE,
    Frame,
    Missing,
    NameInfo,
    meter_name_info,
)

__all__ = ["FUNCTIONS", "Compiled", "compile_expr", "describe_dim"]

Value = float | bool | str
Fn = Callable[[Frame], Value]

#: Longest window accepted in avg/min/max (bounds the memory of a series).
MAX_WINDOW_S = 86400.0

FUNCTIONS = ("avg", "min", "max", "abs", "clamp", "time_between", "known")

_NUMERIC = frozenset({Dim.NUMBER, Dim.POWER, Dim.ENERGY, Dim.DURATION, Dim.TIME})
_ARTICLE = {
    Dim.NUMBER: "a number",
    Dim.POWER: "a power",
    Dim.ENERGY: "an energy",
    Dim.DURATION: "a duration",
    Dim.TIME: "a time of day",
    Dim.BOOL: "a condition (true/false)",
    Dim.STRING: "a string",
}


def describe_dim(dim: Dim) -> str:
    return _ARTICLE[dim]


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """A checked expression: its source, tree, dimension and evaluator."""

    source: str
    tree: Expr
    dim: Dim
    fn: Fn
    windows: tuple[tuple[str, float], ...]  # (series, seconds) the evaluator reads
    loads: frozenset[str]  # load names referenced through load.<name>.<attr>
    constant: float | None = None  # the value when the expression is a plain literal

    def number(self, frame: Frame) -> float:
        """Evaluate a numeric expression.

        Raises:
            Missing: a value it needs is not available.
        """
        v = self.fn(frame)
        assert isinstance(v, float)
        return v

    def test(self, frame: Frame) -> bool | None:
        """Evaluate a condition: True, False, or None when unknown."""
        try:
            return bool(self.fn(frame))
        except Missing:
            return None


class _Checker:
    def __init__(self, load_names: Collection[str]) -> None:
        self.load_names = load_names
        self.windows: list[tuple[str, float]] = []
        self.loads: set[str] = set()

    # ----------------------------------------------------------------- helpers
    def _unify(self, a: Dim, b: Dim, node: Expr, what: str) -> Dim:
        if a == b:
            return a
        if a is Dim.NUMBER and b in _NUMERIC:
            return b
        if b is Dim.NUMBER and a in _NUMERIC:
            return a
        raise ExprError(f"cannot {what} {describe_dim(a)} and {describe_dim(b)}", node.pos)

    def _need(self, dim: Dim, want: Dim, node: Expr, context: str) -> None:
        if dim == want or (dim is Dim.NUMBER and want in _NUMERIC):
            return
        raise ExprError(f"expected {describe_dim(want)} {context}, found {describe_dim(dim)}",
                        node.pos)

    def _need_numeric(self, dim: Dim, node: Expr, context: str) -> None:
        if dim not in _NUMERIC:
            raise ExprError(f"expected a number or quantity {context}, found {describe_dim(dim)}",
                            node.pos)

    # -------------------------------------------------------------------- nodes
    def check(self, e: Expr) -> tuple[Dim, Fn]:
        if isinstance(e, Number):
            v = e.value
            return e.dim, lambda f: v
        if isinstance(e, BoolLit):
            b = e.value
            return Dim.BOOL, lambda f: b
        if isinstance(e, StringLit):
            s = e.value
            return Dim.STRING, lambda f: s
        if isinstance(e, Name):
            return self._name(e)
        if isinstance(e, Neg):
            return self._neg(e)
        if isinstance(e, Not):
            return self._not(e)
        if isinstance(e, BinOp):
            return self._binop(e)
        if isinstance(e, Compare):
            return self._compare(e)
        if isinstance(e, BoolOp):
            return self._boolop(e)
        if isinstance(e, In):
            return self._in(e)
        return self._call(e)

    def _info(self, e: Name) -> NameInfo:
        name = e.name
        info = NAMESPACE.get(name)
        if info is not None:
            return info
        if name.startswith("meter."):
            m = meter_name_info(name[6:])
            if m is None:
                raise ExprError(f"unknown meter quantity {name[6:]!r} (see gateway/quantities.py "
                                "for the keys)", e.pos)
            return m
        if name.startswith("load."):
            parts = name.split(".")
            if len(parts) != 3:
                raise ExprError("expected load.<name>.<attribute>, e.g. load.boiler.on", e.pos)
            _, load, attr = parts
            if load not in self.load_names:
                known = ", ".join(sorted(self.load_names)) or "none"
                raise ExprError(f"unknown load {load!r} (configured: {known})", e.pos)
            a = LOAD_ATTRS.get(attr)
            if a is None:
                raise ExprError(f"unknown load attribute {attr!r} (expected one of "
                                f"{', '.join(LOAD_ATTRS)})", e.pos)
            return a
        candidates = [*NAMESPACE, *CONSTANTS, *FUNCTIONS]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ExprError(f"unknown name {name!r}{hint}", e.pos)

    def _name(self, e: Name) -> tuple[Dim, Fn]:
        name = e.name
        if name in CONSTANTS:
            c = float(CONSTANTS[name])
            return Dim.NUMBER, lambda f: c
        info = self._info(e)
        if name.startswith("load."):
            _, load, attr = name.split(".")
            self.loads.add(load)

            def load_attr(f: Frame) -> Value:
                return f.loads[load].attr(attr, f.now)

            return info.dim, load_attr

        def lookup(f: Frame) -> Value:
            v = f.vals.get(name)
            if v is None:
                raise Missing(name)
            return v

        return info.dim, lookup

    def _neg(self, e: Neg) -> tuple[Dim, Fn]:
        dim, fn = self.check(e.operand)
        if dim not in _NUMERIC or dim is Dim.TIME:
            raise ExprError(f"cannot negate {describe_dim(dim)}", e.pos)
        return dim, lambda f: -fn(f)  # type: ignore[operator]

    def _not(self, e: Not) -> tuple[Dim, Fn]:
        dim, fn = self.check(e.operand)
        self._need(dim, Dim.BOOL, e.operand, "after 'not'")
        return Dim.BOOL, lambda f: not fn(f)

    def _binop(self, e: BinOp) -> tuple[Dim, Fn]:
        ld, lf = self.check(e.left)
        rd, rf = self.check(e.right)
        op = e.op
        self._need_numeric(ld, e.left, f"before '{op}'")
        self._need_numeric(rd, e.right, f"after '{op}'")
        if op in ("+", "-"):
            shift = (Dim.DURATION, Dim.NUMBER)
            if (ld is Dim.TIME and rd in shift) or (op == "+" and rd is Dim.TIME and ld in shift):
                dim = Dim.TIME  # a time of day moved by a duration
            elif op == "-" and ld is Dim.TIME and rd is Dim.TIME:
                dim = Dim.DURATION
            else:
                dim = self._unify(ld, rd, e, "add or subtract")
                if dim is Dim.TIME:
                    raise ExprError("cannot add two times of day", e.pos)
            wrap = dim is Dim.TIME
            if op == "+":
                if wrap:
                    return dim, lambda f: (lf(f) + rf(f)) % 86400.0  # type: ignore[operator]
                return dim, lambda f: lf(f) + rf(f)  # type: ignore[operator]
            if wrap:
                return dim, lambda f: (lf(f) - rf(f)) % 86400.0  # type: ignore[operator]
            return dim, lambda f: lf(f) - rf(f)  # type: ignore[operator]
        if op == "*":
            scale = 1.0
            if ld is Dim.NUMBER:
                dim = rd
            elif rd is Dim.NUMBER:
                dim = ld
            elif {ld, rd} == {Dim.POWER, Dim.DURATION}:
                dim, scale = Dim.ENERGY, 1 / 3600.0  # kW * s -> kWh
            else:
                raise ExprError(f"cannot multiply {describe_dim(ld)} by {describe_dim(rd)}", e.pos)
            if dim is Dim.TIME:
                raise ExprError("cannot multiply a time of day", e.pos)
            if scale != 1.0:
                return dim, lambda f: lf(f) * rf(f) * scale  # type: ignore[operator]
            return dim, lambda f: lf(f) * rf(f)  # type: ignore[operator]
        # "/"
        scale = 1.0
        if rd is Dim.NUMBER:
            dim = ld
        elif ld == rd:
            dim = Dim.NUMBER
        elif ld is Dim.ENERGY and rd is Dim.DURATION:
            dim, scale = Dim.POWER, 3600.0  # kWh / s -> kW
        elif ld is Dim.ENERGY and rd is Dim.POWER:
            dim, scale = Dim.DURATION, 3600.0  # kWh / kW -> s
        else:
            raise ExprError(f"cannot divide {describe_dim(ld)} by {describe_dim(rd)}", e.pos)
        if dim is Dim.TIME:
            raise ExprError("cannot divide a time of day", e.pos)

        def div(f: Frame) -> Value:
            d = rf(f)
            if d == 0:
                raise Missing("division by zero")
            return lf(f) / d * scale  # type: ignore[operator]

        return dim, div

    def _compare(self, e: Compare) -> tuple[Dim, Fn]:
        parts = [self.check(o) for o in e.operands]
        for i, op in enumerate(e.ops):
            a, b = parts[i][0], parts[i + 1][0]
            if a in (Dim.BOOL, Dim.STRING) or b in (Dim.BOOL, Dim.STRING):
                if a != b:
                    raise ExprError(f"cannot compare {describe_dim(a)} with {describe_dim(b)}",
                                    e.operands[i + 1].pos)
                if op not in ("==", "!="):
                    raise ExprError(f"{describe_dim(a)} can only be compared with == or !=",
                                    e.operands[i].pos)
            else:
                self._unify(a, b, e.operands[i + 1], "compare")
        fns = [p[1] for p in parts]
        ops = e.ops
        if len(ops) == 1:
            lf, rf = fns
            op = ops[0]
            if op == "<":
                return Dim.BOOL, lambda f: lf(f) < rf(f)  # type: ignore[operator]
            if op == "<=":
                return Dim.BOOL, lambda f: lf(f) <= rf(f)  # type: ignore[operator]
            if op == ">":
                return Dim.BOOL, lambda f: lf(f) > rf(f)  # type: ignore[operator]
            if op == ">=":
                return Dim.BOOL, lambda f: lf(f) >= rf(f)  # type: ignore[operator]
            if op == "==":
                return Dim.BOOL, lambda f: lf(f) == rf(f)
            return Dim.BOOL, lambda f: lf(f) != rf(f)

        def chain(f: Frame) -> Value:
            left = fns[0](f)
            for op, fn in zip(ops, fns[1:], strict=True):
                right = fn(f)
                if not _CMP[op](left, right):
                    return False
                left = right
            return True

        return Dim.BOOL, chain

    def _boolop(self, e: BoolOp) -> tuple[Dim, Fn]:
        fns: list[Fn] = []
        for o in e.operands:
            dim, fn = self.check(o)
            self._need(dim, Dim.BOOL, o, f"on each side of '{e.op}'")
            fns.append(fn)
        decisive = e.op == "or"  # the value that settles the whole expression

        def boolop(f: Frame) -> Value:
            unknown = False
            for fn in fns:
                try:
                    if bool(fn(f)) is decisive:
                        return decisive
                except Missing:
                    unknown = True
            if unknown:
                raise Missing("unknown operand")
            return not decisive

        return Dim.BOOL, boolop

    def _in(self, e: In) -> tuple[Dim, Fn]:
        dim, item = self.check(e.item)
        opts: list[Fn] = []
        for o in e.options:
            odim, fn = self.check(o)
            if dim in (Dim.BOOL, Dim.STRING) or odim in (Dim.BOOL, Dim.STRING):
                if dim != odim:
                    raise ExprError(f"cannot compare {describe_dim(dim)} with {describe_dim(odim)}",
                                    o.pos)
            else:
                self._unify(dim, odim, o, "compare")
            opts.append(fn)
        negated = e.negated

        def member(f: Frame) -> Value:
            v = item(f)
            found = any(fn(f) == v for fn in opts)
            return found != negated

        return Dim.BOOL, member

    # ---------------------------------------------------------------- functions
    def _window_arg(self, e: Call) -> tuple[str, float] | None:
        if len(e.args) != 2:
            return None
        series, window = e.args
        if not (isinstance(window, Number) and window.dim is Dim.DURATION):
            return None
        if not isinstance(series, Name):
            raise ExprError(f"expected a series name such as import_power_kw as the first "
                            f"argument of {e.func}(x, window)", series.pos)
        info = self._info(series)
        if not info.series:
            raise ExprError(f"{series.name} is not a series that {e.func}() can look back over "
                            "(try import_power_kw, export_power_kw, net_power_kw or meter.<key>)",
                            series.pos)
        if not 0 < window.value <= MAX_WINDOW_S:
            raise ExprError("expected a window longer than 0 s and at most 1 d", window.pos)
        return series.name, window.value

    def _call(self, e: Call) -> tuple[Dim, Fn]:
        func = e.func
        if func not in FUNCTIONS:
            close = difflib.get_close_matches(func, FUNCTIONS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}()?" if close else ""
            raise ExprError(f"unknown function {func}() (expected one of "
                            f"{', '.join(FUNCTIONS)}){hint}", e.pos)
        args = e.args
        if func in ("avg", "min", "max"):
            w = self._window_arg(e)
            if w is not None:
                series, secs = w
                self.windows.append(w)
                info = self._info(e.args[0])  # type: ignore[arg-type]

                def window(f: Frame) -> Value:
                    return f.window(series, func, secs)

                return info.dim, window
            if func == "avg":
                raise ExprError("expected avg(series, window), e.g. avg(import_power_kw, 5m)",
                                e.pos)
            if len(args) < 2:
                raise ExprError(f"expected {func}(series, window) or {func}(a, b, ...)", e.pos)
            parts = [self.check(a) for a in args]
            dim = parts[0][0]
            self._need_numeric(dim, args[0], f"in {func}()")
            for (d, _), a in zip(parts[1:], args[1:], strict=True):
                self._need_numeric(d, a, f"in {func}()")
                dim = self._unify(dim, d, a, f"take the {func}imum of")
            fns = [p[1] for p in parts]
            pick = min if func == "min" else max
            return dim, lambda f: pick(fn(f) for fn in fns)
        if func == "abs":
            self._arity(e, 1)
            dim, fn = self.check(args[0])
            self._need_numeric(dim, args[0], "in abs()")
            return dim, lambda f: abs(fn(f))  # type: ignore[arg-type]
        if func == "clamp":
            self._arity(e, 3)
            parts = [self.check(a) for a in args]
            dim = parts[0][0]
            self._need_numeric(dim, args[0], "in clamp()")
            for (d, _), a in zip(parts[1:], args[1:], strict=True):
                dim = self._unify(dim, d, a, "clamp")
            xf, lof, hif = (p[1] for p in parts)
            return dim, lambda f: min(max(xf(f), lof(f)), hif(f))
        if func == "time_between":
            self._arity(e, 2)
            a_dim, af = self.check(args[0])
            b_dim, bf = self.check(args[1])
            self._need(a_dim, Dim.TIME, args[0], "in time_between()")
            self._need(b_dim, Dim.TIME, args[1], "in time_between()")

            def between(f: Frame) -> Value:
                t = f.vals["time"]
                a, b = af(f), bf(f)
                if a <= b:  # type: ignore[operator]
                    return a <= t < b  # type: ignore[operator]
                return t >= a or t < b  # type: ignore[operator]

            return Dim.BOOL, between
        # known
        self._arity(e, 1)
        _, fn = self.check(args[0])

        def known(f: Frame) -> Value:
            try:
                fn(f)
            except Missing:
                return False
            return True

        return Dim.BOOL, known

    def _arity(self, e: Call, n: int) -> None:
        if len(e.args) != n:
            raise ExprError(f"{e.func}() takes {n} argument{'s' if n != 1 else ''}, "
                            f"found {len(e.args)}", e.pos)


_CMP: dict[str, Callable[[Value, Value], bool]] = {
    "<": lambda a, b: a < b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def compile_expr(text: str, *, expect: Dim, load_names: Collection[str] = (),
                 context: str = "here") -> Compiled:
    """Parse, check and compile ``text``, which must be of dimension ``expect``.

    Raises:
        ExprError: with the offset of the problem and what was expected.
    """
    tree = parse(text)
    checker = _Checker(load_names)
    dim, fn = checker.check(tree)
    if not (dim == expect or (dim is Dim.NUMBER and expect in _NUMERIC)):
        raise ExprError(f"expected {describe_dim(expect)} {context}, found {describe_dim(dim)}",
                        tree.pos)
    constant: float | None = None
    if isinstance(tree, Number):
        constant = tree.value
    elif isinstance(tree, Neg) and isinstance(tree.operand, Number):
        constant = -tree.operand.value
    return Compiled(
        source=text,
        tree=tree,
        dim=expect if dim is Dim.NUMBER else dim,
        fn=fn,
        windows=tuple(dict.fromkeys(checker.windows)),
        loads=frozenset(checker.loads),
        constant=constant,
    )
