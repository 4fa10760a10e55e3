"""The gateway's BACnet objects (ANSI/ASHRAE 135 clause 12) on bacpypes3's local objects.

bacpypes3 objects are writable by anyone by default; here every object
refuses writes with ``property / write-access-denied`` (clause 15.9.1.3.1) and
reports the refusal, except the override Binary Values, whose present value
(only) is commandable through the priority array (clause 19.2).

Two bacpypes3 0.0.110 gaps are closed here, not patched in the library:
``BinaryValueObjectCmd`` lacks the local-object base (so no COV, no property
monitors) and ``MultiStateValueObject`` uses the COV-increment criteria although
multi-state objects have no ``covIncrement`` (the first change under a
subscription would raise); both get the generic criteria of clause 13.1.2.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from bacpypes3.errors import PropertyError
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject

__all__ = [
    "GatewayAnalogInput",
    "GatewayAnalogValue",
    "GatewayBinaryValue",
    "GatewayDevice",
    "GatewayMultiStateValue",
    "GatewayNetworkPort",
    "OverrideBinaryValue",
    "WRITE_SOURCE",
    "engineering_units",
    "install_hooks",
]

log = logging.getLogger(__name__)

#: The address of the peer whose WriteProperty(Multiple) is being served (for logs).
WRITE_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("bacnet_write_source", default="?")

#: Called as ``refused(object, property name)`` when a peer's write is refused.
Refusal = Callable[[Any, str], None]

# Our canonical units (gateway.quantities) -> BACnet engineering units (clause 21, BACnetEngineeringUnits).
_UNITS: dict[str, str] = {
    "W": "watts",
    "kW": "kilowatts",
    "MW": "megawatts",
    "Wh": "wattHours",
    "kWh": "kilowattHours",
    "MWh": "megawattHours",
    "V": "volts",
    "kV": "kilovolts",
    "mV": "millivolts",
    "A": "amperes",
    "mA": "milliamperes",
    "Hz": "hertz",
    "m³": "cubicMeters",
    "m³/h": "cubicMetersPerHour",
    "L": "liters",
    "L/h": "litersPerHour",
    "L/min": "litersPerMinute",
    "VA": "voltAmperes",
    "kVA": "kilovoltAmperes",
    "MVA": "megavoltAmperes",
    "var": "voltAmperesReactive",
    "kvar": "kilovoltAmperesReactive",
    "Mvar": "megavoltAmperesReactive",
    "varh": "voltAmpereHoursReactive",
    "kvarh": "kilovoltAmpereHoursReactive",
    "Mvarh": "megavoltAmpereHoursReactive",
    "J": "joules",
    "kJ": "kilojoules",
    "MJ": "megajoules",
    "°C": "degreesCelsius",
    "bar": "bars",
    "s": "seconds",
    "%": "percent",
}


def install_hooks(obj: Any, *, refused: Refusal,
                  written: Callable[[OverrideBinaryValue], None] | None = None) -> None:
    """Tell an object whom to call on a refused write (and, for overrides, an accepted one)."""
    setattr(obj, "_refused", refused)
    if written is not None:
        setattr(obj, "_written", written)


def engineering_units(unit: str | None) -> str:
    """The BACnet engineering unit for one of our canonical units (``noUnits`` if none fits)."""
    if unit is None:
        return "noUnits"
    return _UNITS.get(unit, "noUnits")


class _ReadOnly:
    """Refuse every WriteProperty / WritePropertyMultiple to this object."""

    _refused = None  # Refusal | None (no annotation: bacpypes3's metaclass evaluates them)

    async def write_property(self, attr: int | str, value: Any, index: int | None = None,
                             priority: int | None = None) -> None:
        _refuse(self, attr)


def _refuse(obj: Any, attr: int | str) -> None:
    name = attr if isinstance(attr, str) else str(attr)
    try:
        if isinstance(attr, int):
            name = obj._property_identifier_class(attr).attr
    except (ValueError, KeyError, AttributeError):
        pass
    hook = obj._refused
    if hook is not None:
        hook(obj, name)
    raise PropertyError("writeAccessDenied")


class GatewayDevice(_ReadOnly, DeviceObject):  # type: ignore[misc]
    vendorName = "han-gateway"
    modelName = "han-gateway"


class GatewayNetworkPort(_ReadOnly, NetworkPortObject):  # type: ignore[misc]
    pass


class GatewayAnalogInput(_ReadOnly, AnalogInputObject):  # type: ignore[misc]
    pass


class GatewayAnalogValue(_ReadOnly, AnalogValueObject):  # type: ignore[misc]
    pass


class GatewayBinaryValue(_ReadOnly, BinaryValueObject):  # type: ignore[misc]
    pass


class GatewayMultiStateValue(_ReadOnly, MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class OverrideBinaryValue(Commandable, BinaryValueObject):  # type: ignore[misc]
    """A commandable Binary Value: the BMS's manual override of one load.

    Only ``present-value`` may be written (at a priority; none means 16, clause
    19.2.1); ``_written(obj)`` runs after each accepted write.  The relinquish
    default follows the load's actual state, so with every slot relinquished
    the present value shows what the rules decided.
    """

    # No annotations in these class bodies: bacpypes3's metaclass evaluates them.
    _cov_criteria = GenericCriteria
    _refused = None  # Refusal | None
    _written = None  # Callable[[OverrideBinaryValue], None] | None

    async def write_property(self, attr: int | str, value: Any, index: int | None = None,
                             priority: int | None = None) -> None:
        name = attr
        if isinstance(attr, int):
            name = self._property_identifier_class(attr).attr
        if name != "presentValue" or index is not None:
            _refuse(self, attr)
        await super().write_property(attr, value, index, priority)
        if self._written is not None:
            self._written(self)

    def commanded(self) -> bool:
        """Whether any priority slot holds a value (else the relinquish default rules)."""
        return any(pv.null is None for pv in self.priorityArray)
