"""Which meter reader handles which ``protocol`` in ``[[meter]]``.

A protocol adds one line here (``"name": "module:Class"``).  A reader class may
declare ``Options`` (a frozen pydantic model for the meter's ``[meter.options]``
table, validated at start with the other config) and ``line_defaults``
(baud rate, data bits, parity used when the config does not say).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.meters.base import MeterReader

READERS: dict[str, str] = {
    "dlms": "gateway.meters.dlms:DlmsReader",
    "dsmr": "gateway.meters.dsmr:DsmrReader",
    "iec62056-21": "gateway.meters.iec62056_21:Iec62056Reader",
    "mbus": "gateway.meters.mbus:MbusReader",
    "sml": "gateway.meters.sml:SmlReader",
}


def reader_class(protocol: str) -> type[MeterReader]:
    """The reader class for ``protocol``.

    Raises:
        KeyError: no reader is registered for it.
    """
    module, _, name = READERS[protocol].partition(":")
    cls: type[MeterReader] = getattr(importlib.import_module(module), name)
    return cls
