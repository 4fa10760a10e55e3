"""Tokens of the rule expression language.

Numbers (``5``, ``0.35``), durations written without spaces (``30s``,
``5m``, ``1h30m``, ``250ms``; units ms, s, m or min, h, d), times of day
(``17:00``, ``06:30:15``), names with dots (``dr.criticality``,
``load.boiler.on``), strings in single or double quotes, and the operators
``+ - * / % ( ) [ ] , < <= > >= == !=``.  Units that are separate words
(``4.5 kW``, ``300 W``, ``12 kWh``) are names here; the parser attaches them
to the number before.

Not supported: exponents (``1e3``), ``&&``/``||``/``!`` (the words ``and``,
``or``, ``not`` instead), escapes in strings other than ``\\\\``, ``\\'`` and
``\\"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["DURATION_UNITS", "ExprError", "Token", "tokenize"]

#: Seconds per duration unit.
DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

TokenKind = Literal["num", "dur", "time", "name", "str", "op", "eof"]


class ExprError(Exception):
    """A problem in an expression at character ``pos`` (internal; callers map it
    to :class:`gateway.errors.RuleSyntaxError` with a file position)."""

    def __init__(self, message: str, pos: int) -> None:
        self.message = message
        self.pos = pos
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    kind: TokenKind
    text: str
    pos: int
    end: int
    value: float = 0.0  # num: the number; dur: seconds; time: seconds after midnight


_DUR_PART = r"\d+(?:\.\d+)?(?:ms|min|s|m|h|d)"
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<time>\d{1,2}:\d{2}(?::\d{2})?)(?![\w:])
  | (?P<dur>(?:"""
    + _DUR_PART
    + r""")+)(?![\w.])
  | (?P<num>\d+(?:\.\d+)?|\.\d+)
  | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
  | (?P<op><=|>=|==|!=|[-+*/%()\[\],<>])
    """,
    re.VERBOSE | re.ASCII,
)
_DUR_SPLIT = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d)")

_BAD_OPS = {
    "=": "expected '==' to compare (a single '=' is not an operator)",
    "&": "expected 'and' ('&&' and '&' are not operators)",
    "|": "expected 'or' ('||' and '|' are not operators)",
    "!": "expected 'not' or '!=' ('!' alone is not an operator)",
}


def _string(text: str, pos: int) -> tuple[str, int]:
    quote = text[pos]
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ("\\", "'", '"'):
            out.append(text[i + 1])
            i += 2
            continue
        if c == "\n":
            break
        out.append(c)
        i += 1
    raise ExprError(f"expected a closing {quote} for this string", pos)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with one ``eof`` token.

    Raises:
        ExprError: a character that starts no token, or an unterminated string.
    """
    out: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in ("'", '"'):
            value, end = _string(text, pos)
            out.append(Token(kind="str", text=value, pos=pos, end=end))
            pos = end
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            if text.startswith(("=", "&", "|", "!"), pos):
                raise ExprError(_BAD_OPS[c], pos)
            raise ExprError(f"unexpected character {c!r}", pos)
        kind = m.lastgroup
        end = m.end()
        tok = m.group()
        if kind == "time":
            parts = [int(p) for p in tok.split(":")]
            h, mi = parts[0], parts[1]
            s = parts[2] if len(parts) > 2 else 0
            if h > 24 or mi > 59 or s > 59 or (h == 24 and (mi or s)):
                raise ExprError(f"{tok} is not a time of day (expected 00:00 to 24:00)", pos)
            out.append(Token(kind="time", text=tok, pos=pos, end=end,
                             value=h * 3600.0 + mi * 60 + s))
        elif kind == "dur":
            secs = sum(float(v) * DURATION_UNITS[u] for v, u in _DUR_SPLIT.findall(tok))
            out.append(Token(kind="dur", text=tok, pos=pos, end=end, value=secs))
        elif kind == "num":
            out.append(Token(kind="num", text=tok, pos=pos, end=end, value=float(tok)))
        elif kind == "name":
            out.append(Token(kind="name", text=tok, pos=pos, end=end))
        elif kind == "op":
            out.append(Token(kind="op", text=tok, pos=pos, end=end))
        pos = end
    out.append(Token(kind="eof", text="", pos=n, end=n))
    return out
