"""Where each value of a TOML document sits, for error messages with line:column.

``tomllib`` gives values but no positions.  This scanner walks a document that
``tomllib`` has already accepted and records, for each key path
(``("rule", 0, "when")``, ``("load", 1, "comfort", "max_off")``,
``("rule", 2, "loads", 1)``), the offset of its value; for strings also the
raw text between the quotes, so that an offset inside the decoded string (an
expression error) maps back to the exact source column, escapes included.

Not supported (positions fall back to the enclosing key or table): values of
dotted keys inside inline tables, and dates written with a space.
"""

from __future__ import annotations

import bisect
import contextlib
import re
from dataclasses import dataclass

__all__ = ["Located", "TomlPositions"]

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WS = re.compile(r"(?:[ \t]+|#[^\n]*)+")
_WS_NL = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Located:
    pos: int  # offset of the value's first character (or the table header's '[')
    kind: str  # "table", "basic", "literal", "ml_basic", "ml_literal", "array", "inline", "other"
    content: int = 0  # offset of a string's first content character
    raw: str = ""  # a string's raw text between the delimiters


class _Scan:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.found: dict[Path, Located] = {}
        self.keys: dict[Path, int] = {}  # offset of each key (not its value)
        self.counts: dict[Path, int] = {}

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def skip_ws(self, newlines: bool = False) -> None:
        m = (_WS_NL if newlines else _WS).match(self.text, self.i)
        if m is not None:
            self.i = m.end()

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c in ('"', "'"):
                loc = self.string()
                parts.append(_decode(loc.raw, loc.kind) if loc.kind == "basic" else loc.raw)
            else:
                m = _BARE_KEY.match(self.text, self.i)
                if m is None:
                    raise ValueError("key expected")
                self.i = m.end()
                parts.append(m.group())
            self.skip_ws()
            if self.peek() == ".":
                self.i += 1
                continue
            return parts

    def string(self) -> Located:
        t = self.text
        start = self.i
        q = t[start]
        if t.startswith(q * 3, start):
            kind = "ml_basic" if q == '"' else "ml_literal"
            self.i = start + 3
            content = self.i
            while True:
                j = t.find(q * 3, self.i)
                if j < 0:
                    raise ValueError("unterminated string")
                if kind == "ml_basic" and _escaped(t, j):
                    self.i = j + 1
                    continue
                # Up to two quotes may sit right before the closing three.
                while t.startswith(q * 4, j):
                    j += 1
                self.i = j + 3
                return Located(pos=start, kind=kind, content=content, raw=t[content:j])
        kind = "basic" if q == '"' else "literal"
        self.i = start + 1
        content = self.i
        while self.i < len(t):
            c = t[self.i]
            if c == "\\" and kind == "basic":
                self.i += 2
                continue
            if c == q:
                self.i += 1
                return Located(pos=start, kind=kind, content=content, raw=t[content : self.i - 1])
            self.i += 1
        raise ValueError("unterminated string")

    def value(self, path: Path) -> None:
        c = self.peek()
        start = self.i
        if c in ('"', "'"):
            self.found[path] = self.string()
        elif c == "[":
            self.found[path] = Located(pos=start, kind="array")
            self.i += 1
            n = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.value((*path, n))
                n += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.found[path] = Located(pos=start, kind="inline")
            self.i += 1
            while True:
                self.skip_ws()
                if self.peek() == "}":
                    self.i += 1
                    return
                kstart = self.i
                parts = self.key()
                self.keys[(*path, *parts)] = kstart
                self.skip_ws()
                if self.peek() != "=":
                    raise ValueError("= expected")
                self.i += 1
                self.skip_ws()
                self.value((*path, *parts))
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
        else:
            t = self.text
            while self.i < len(t) and t[self.i] not in ",]}\r\n#":
                self.i += 1
            self.found[path] = Located(pos=start, kind="other")

    def run(self) -> None:
        table: Path = ()
        t = self.text
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(t):
                return
            start = self.i
            if t.startswith("[[", self.i):
                self.i += 2
                name = tuple(self.key())
                self.i = t.index("]]", self.i) + 2
                n = self.counts.get(name, 0)
                self.counts[name] = n + 1
                table = (*name, n)
                self.found[table] = Located(pos=start, kind="table")
            elif t[self.i] == "[":
                self.i += 1
                name = tuple(self.key())
                self.i = t.index("]", self.i) + 1
                table = name
                self.found[table] = Located(pos=start, kind="table")
            else:
                parts = self.key()
                self.keys[(*table, *parts)] = start
                self.skip_ws()
                if self.peek() != "=":
                    raise ValueError("= expected")
                self.i += 1
                self.skip_ws()
                self.value((*table, *parts))


def _escaped(text: str, j: int) -> bool:
    n = 0
    while j - 1 - n >= 0 and text[j - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\",
            "e": "\x1b"}


def _walk(raw: str, kind: str) -> list[tuple[int, str]]:
    """Each decoded character with the raw offset it comes from."""
    out: list[tuple[int, str]] = []
    i = 0
    if kind in ("ml_basic", "ml_literal"):
        if raw.startswith("\r\n"):
            i = 2
        elif raw.startswith("\n"):
            i = 1
    literal = kind in ("literal", "ml_literal")
    while i < len(raw):
        c = raw[i]
        if c != "\\" or literal:
            out.append((i, c))
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if nxt in _ESCAPES:
            out.append((i, _ESCAPES[nxt]))
            i += 2
        elif nxt in ("u", "U"):
            width = 4 if nxt == "u" else 8
            out.append((i, chr(int(raw[i + 2 : i + 2 + width], 16))))
            i += 2 + width
        elif nxt == "x":
            out.append((i, chr(int(raw[i + 2 : i + 4], 16))))
            i += 4
        else:  # line-ending backslash: drop whitespace up to the next content
            i += 1
            while i < len(raw) and raw[i] in " \t\r\n":
                i += 1
    return out


def _decode(raw: str, kind: str) -> str:
    return "".join(c for _, c in _walk(raw, kind))


class TomlPositions:
    """Positions of the values in one TOML document (best effort, never raises).

    The document is scanned on the first question only: valid files cost nothing.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._found: dict[Path, Located] | None = None
        self._keys: dict[Path, int] = {}
        self._lines: list[int] = []

    @property
    def found(self) -> dict[Path, Located]:
        if self._found is None:
            scan = _Scan(self.text)
            with contextlib.suppress(ValueError, IndexError):
                scan.run()  # on confusion, keep what was found before it
            self._found = scan.found
            self._keys = scan.keys
        return self._found

    @property
    def keys(self) -> dict[Path, int]:
        _ = self.found
        return self._keys

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        if not self._lines:
            self._lines = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_right(self._lines, offset) - 1
        return line + 1, offset - self._lines[line] + 1

    def offset(self, path: Path, index: int | None = None, *, key: bool = False) -> int:
        """Offset of ``path``'s value (with ``key``, of the key itself); with
        ``index``, of that character inside the decoded string.  Falls back to
        the first table of an array of tables, then to the nearest enclosing
        key or table."""
        if key and path in self.keys:
            return self.keys[path]
        if path not in self.found and (*path, 0) in self.found:
            path = (*path, 0)
        p = path
        while p and p not in self.found:
            p = p[:-1]
        if not p:
            return 0
        loc = self.found[p]
        if index is None or p != path or loc.kind not in ("basic", "literal", "ml_basic",
                                                          "ml_literal"):
            return loc.pos
        walked = _walk(loc.raw, loc.kind)
        if index < len(walked):
            return loc.content + walked[index][0]
        return loc.content + len(loc.raw)

    def where(self, path: Path, index: int | None = None, *,
              key: bool = False) -> tuple[int, int]:
        return self.line_col(self.offset(path, index, key=key))
