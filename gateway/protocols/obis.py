"""OBIS codes (IEC 62056-61): ``A-B:C.D.E*F``.

Textual forms accepted: ``1-0:1.8.1``, ``1-0:1.8.1*255``, ``1-0:1.8.1.255``,
``1.0.1.8.1.255`` and the six raw bytes.  The canonical text form omits F when
it is 255 (the "not used" value), as DSMR and most tools print it.  Short
IEC 62056-21 addresses such as ``1.8.0`` or ``C.1.0`` are not OBIS codes; they
are kept as strings by the codecs and never parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import FramingError

_FULL = re.compile(
    r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.&](\d{1,3}))?$"
)
_DOTTED = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True, slots=True)
class ObisCode:
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for name in ("a", "b", "c", "d", "e", "f"):
            v = getattr(self, name)
            if not 0 <= v <= 255:
                raise FramingError(f"OBIS group {name.upper()}={v} is outside 0..255")

    @classmethod
    def parse(cls, text: str) -> ObisCode:
        """Parse a textual OBIS code.

        Raises:
            FramingError: the text is not an OBIS code.
        """
        m = _FULL.match(text) or _DOTTED.match(text)
        if m is None:
            raise FramingError(f"not an OBIS code: {text[:40]!r}")
        groups = [int(g) if g is not None else 255 for g in m.groups()]
        return cls(*groups)

    @classmethod
    def from_bytes(cls, data: bytes) -> ObisCode:
        """Build from the six-byte octet-string form used by DLMS and SML.

        Raises:
            FramingError: ``data`` is not six bytes long.
        """
        if len(data) != 6:
            raise FramingError(f"OBIS octet string must be 6 bytes, got {len(data)}")
        return cls(*data)

    def to_bytes(self) -> bytes:
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    def __str__(self) -> str:
        base = f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}"
        return base if self.f == 255 else f"{base}*{self.f}"


def normalise_id(text: str) -> str:
    """Canonical id for a data line address: OBIS as ``A-B:C.D.E`` (F omitted
    when 255); anything that is not a full OBIS code (short IEC 62056-21
    addresses like ``1.8.0``) is returned unchanged."""
    m = _FULL.match(text)
    if m is None:
        return text
    try:
        return str(ObisCode.parse(text))
    except FramingError:
        return text
