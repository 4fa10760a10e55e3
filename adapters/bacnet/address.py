"""Actuator addresses of the ``bacnet`` adapter, and the local address syntax.

An actuator is written ``bacnet:<device-address>/<object-type>:<instance>[@<priority>]``::

    bacnet:192.168.1.20/binary-output:3            # port 47808, priority 8
    bacnet:192.168.1.20:47809/analog-value:7@10
    bacnet:192.168.1.20/binary-value:2@9?shed=active

``<device-address>`` is the IPv4 address of the BACnet/IP device with an
optional UDP port (default 47808).  The object must be commandable (it has a
priority array): binary-output, binary-value, analog-output, analog-value,
multi-state-output or multi-state-value.  ``@<priority>`` is the slot of the
priority array the gateway writes (default 8); priorities 1 and 2 (life safety)
and 6 (minimum on/off) are refused.

On SHED the gateway writes the shed value at that priority (binary objects:
``inactive``; analog and multi-state: ``0`` and ``1``, or ``?shed=<value>``); on
RESTORE it relinquishes its slot (writes NULL), so the object falls back to a
lower priority or its relinquish default; ``?restore=<value>`` writes that
value instead.  LIMIT writes ``limit_w`` to analog objects (in W) and is refused
for the others.

Not supported: devices behind a BACnet router (remote network/MAC addresses),
IPv6, binding by device instance (Who-Is).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = [
    "ActuatorAddress",
    "COMMANDABLE_TYPES",
    "DEFAULT_PORT",
    "DEFAULT_PRIORITY",
    "LocalAddress",
    "parse_actuator",
    "parse_host_port",
    "parse_local_address",
]

DEFAULT_PORT = 47808
DEFAULT_PRIORITY = 8
#: Life safety (1, 2) and the minimum on/off slot (6) are not for a load manager.
FORBIDDEN_PRIORITIES = frozenset({1, 2, 6})

#: Object types with a priority array, and the kind of value each takes.
COMMANDABLE_TYPES: dict[str, str] = {
    "binary-output": "binary",
    "binary-value": "binary",
    "analog-output": "analog",
    "analog-value": "analog",
    "multi-state-output": "multistate",
    "multi-state-value": "multistate",
}

_ACTUATOR = re.compile(
    r"^(?P<host>[0-9.]+)(?::(?P<port>\d{1,5}))?/(?P<type>[a-z-]+):(?P<instance>\d{1,7})"
    r"(?:@(?P<priority>\d{1,2}))?(?:\?(?P<query>.*))?$"
)
_HOST_PORT = re.compile(r"^(?P<host>[0-9.]+)(?::(?P<port>\d{1,5}))?$")
_LOCAL = re.compile(r"^(?P<host>[0-9.]+)/(?P<prefix>\d{1,2})(?::(?P<port>\d{1,5}))?$")
_BINARY_VALUES = {"active": True, "inactive": False, "1": True, "0": False, "on": True, "off": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class ActuatorAddress:
    host: str
    port: int
    object_type: str  # "binary-output", ...
    instance: int
    priority: int
    shed: bool | float | int  # value written on SHED
    restore: bool | float | int | None  # None: relinquish on RESTORE

    @property
    def kind(self) -> str:
        return COMMANDABLE_TYPES[self.object_type]

    @property
    def device(self) -> str:
        """``host:port`` as bacpypes3 takes it."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAddress:
    host: str
    prefix: int
    port: int

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}:{self.port}"


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _port(text: str | None) -> int | None:
    if text is None:
        return DEFAULT_PORT
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _value(kind: str, text: str) -> bool | float | int | None:
    if kind == "binary":
        return _BINARY_VALUES.get(text.lower())
    try:
        if kind == "multistate":
            v = int(text)
            return v if v >= 1 else None
        return float(text)
    except ValueError:
        return None


def parse_actuator(text: str) -> ActuatorAddress | str:
    """Parse the part after ``bacnet:``; returns the address or a problem description."""
    m = _ACTUATOR.match(text)
    if m is None:
        return ("expected <ip>[:<port>]/<object-type>:<instance>[@<priority>], "
                "e.g. 192.168.1.20:47808/binary-output:3@8")
    host = _ipv4(m["host"])
    if host is None:
        return f"{m['host']!r} is not an IPv4 address"
    port = _port(m["port"])
    if port is None:
        return "the UDP port must be within 1..65535"
    otype = m["type"]
    if otype not in COMMANDABLE_TYPES:
        return f"object type must be a commandable one: {', '.join(COMMANDABLE_TYPES)}"
    kind = COMMANDABLE_TYPES[otype]
    instance = int(m["instance"])
    if instance > 4194302:
        return "the object instance must be within 0..4194302"
    priority = int(m["priority"]) if m["priority"] is not None else DEFAULT_PRIORITY
    if not 1 <= priority <= 16:
        return "the priority must be within 1..16"
    if priority in FORBIDDEN_PRIORITIES:
        return "priorities 1 and 2 (life safety) and 6 (minimum on/off) are not for load control"
    shed: bool | float | int = {"binary": False, "analog": 0.0, "multistate": 1}[kind]
    restore: bool | float | int | None = None
    for key, raw in parse_qsl(m["query"] or "", keep_blank_values=True, strict_parsing=False):
        if key not in ("shed", "restore"):
            return f"unknown option {key!r} (expected shed= or restore=)"
        if key == "restore" and raw == "relinquish":
            restore = None
            continue
        v = _value(kind, raw)
        if v is None:
            return f"{key}={raw!r} is not a {kind} value"
        if key == "shed":
            shed = v
        else:
            restore = v
    return ActuatorAddress(host=host, port=port, object_type=otype, instance=instance,
                           priority=priority, shed=shed, restore=restore)


def parse_host_port(text: str) -> tuple[str, int] | str:
    """``host[:port]`` (IPv4) -> ``(host, port)`` or a problem description."""
    m = _HOST_PORT.match(text)
    host = _ipv4(m["host"]) if m is not None else None
    if m is None or host is None:
        return "expected <ipv4>[:<port>]"
    port = _port(m["port"])
    if port is None:
        return "the UDP port must be within 1..65535"
    return host, port


def parse_local_address(text: str) -> LocalAddress | str:
    """``ip/prefix[:port]`` -> :class:`LocalAddress` or a problem description."""
    m = _LOCAL.match(text)
    host = _ipv4(m["host"]) if m is not None else None
    if m is None or host is None:
        return "expected <ipv4>/<prefix length>[:<port>], e.g. 192.168.1.10/24:47808"
    prefix = int(m["prefix"])
    if not 0 <= prefix <= 32:
        return "the prefix length must be within 0..32"
    port = _port(m["port"])
    if port is None:
        return "the UDP port must be within 1..65535"
    return LocalAddress(host=host, prefix=prefix, port=port)
