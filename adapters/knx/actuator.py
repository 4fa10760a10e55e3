"""The KNX actuator address: the part after ``knx:`` in a load's ``actuator``.

Syntax: ``<switch group address>[?status=<status group address>]``, e.g.
``knx:1/2/3`` or ``knx:1/2/3?status=1/2/4``.  The switch address takes
DPT 1.001 (on/off); the status address is the actuator's DPT 1.001 feedback
object, whose GroupValueWrite / GroupValueResponse telegrams become
``LoadFeedback`` on the bus.  Group addresses are 3-level (``1/2/3``) or
2-level (``1/234``).
"""

from __future__ import annotations

from dataclasses import dataclass

from xknx.telegram import GroupAddress

from adapters.knx.config import parse_group_address

_KEYS = ("status",)


@dataclass(frozen=True, slots=True)
class ActuatorAddress:
    switch: GroupAddress
    status: GroupAddress | None = None


def parse_actuator_address(text: str) -> ActuatorAddress:
    """Parse ``1/2/3`` or ``1/2/3?status=1/2/4``.

    Raises:
        ValueError: with a message naming what is wrong.
    """
    main, sep, query = text.strip().partition("?")
    switch = parse_group_address(main)
    status: GroupAddress | None = None
    if sep:
        if not query:
            raise ValueError("expected status=<group address> after '?'")
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if key not in _KEYS or not eq:
                raise ValueError(f"unknown option {part!r} (expected status=<group address>)")
            if status is not None:
                raise ValueError("status is given twice")
            status = parse_group_address(value)
        if status == switch:
            raise ValueError("the status address must differ from the switch address")
    return ActuatorAddress(switch=switch, status=status)


def actuator_problem(address: str) -> str | None:
    """``None`` when ``address`` (after ``knx:``) is valid, else what is wrong."""
    try:
        parse_actuator_address(address)
    except ValueError as exc:
        return str(exc)
    return None
