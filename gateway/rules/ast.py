"""The frozen syntax tree of rule expressions, and the dimensions values carry.

Every node keeps ``pos``/``end``: character offsets into the expression text,
which :mod:`gateway.rules.rulefile` maps back to ``file:line:col``.

Values are held in one unit per dimension, so that a bare number means that
unit: power in kW, energy in kWh, durations in seconds, time of day in seconds
after local midnight.  ``5000 W`` is the literal ``5.0`` with dimension POWER.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BinOp",
    "BoolLit",
    "BoolOp",
    "Call",
    "Compare",
    "Dim",
    "Expr",
    "In",
    "Name",
    "Neg",
    "Not",
    "Number",
    "StringLit",
]


class Dim(enum.Enum):
    """What a value measures.  NUMBER is a bare number and fits any quantity."""

    NUMBER = "number"
    POWER = "power"  # kW
    ENERGY = "energy"  # kWh
    DURATION = "duration"  # s
    TIME = "time of day"  # s after local midnight
    BOOL = "boolean"
    STRING = "string"


@dataclass(frozen=True, slots=True, kw_only=True)
class Number:
    pos: int
    end: int
    value: float
    dim: Dim  # NUMBER, POWER, ENERGY, DURATION or TIME


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolLit:
    pos: int
    end: int
    value: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StringLit:
    pos: int
    end: int
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Name:
    pos: int
    end: int
    name: str  # dotted: "import_power_kw", "dr.criticality", "load.boiler.on"


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    pos: int
    end: int
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Neg:
    pos: int
    end: int
    operand: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Not:
    pos: int
    end: int
    operand: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class BinOp:
    pos: int
    end: int
    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare:
    """``a < b <= c`` as in Python: every neighbouring pair must hold."""

    pos: int
    end: int
    ops: tuple[Literal["<", "<=", ">", ">=", "==", "!="], ...]
    operands: tuple[Expr, ...]  # len(ops) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolOp:
    pos: int
    end: int
    op: Literal["and", "or"]
    operands: tuple[Expr, ...]  # two or more


@dataclass(frozen=True, slots=True, kw_only=True)
class In:
    """``weekday in [sat, sun]``."""

    pos: int
    end: int
    item: Expr
    options: tuple[Expr, ...]
    negated: bool = False  # ``not in``


Expr = Number | BoolLit | StringLit | Name | Call | Neg | Not | BinOp | Compare | BoolOp | In
