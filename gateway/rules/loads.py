"""Load definitions: what the engine may switch, and the limits it must respect.

A load is declared in a rule file as a ``[[load]]`` table::

    [[load]]
    name = "boiler"                      # [a-z][a-z0-9_]*, unique in the rule folder
    actuator = "mqtt:home/boiler/set"    # mqtt:<topic> | knx:<group address> |
                                         # modbus:<...> | bacnet:<...> | zigbee:<...>
    rated_power = "2.4 kW"               # what shedding it saves, until measured
    priority = 2                         # 0-1000, higher = more important = shed later
    classes = ["water_heater"]           # load classes a DR event may target
    min_on = "5m"                        # once on, stay on at least this long
    min_off = "5m"                       # once off, stay off at least this long
    max_shed = "2h"                      # fail-safe: restored after this, whatever the rules say
    recovery = "15m"                     # after a fail-safe restore, not shed again for this long
    safe_state = "on"                    # on start-up and stale meter data: "on" or "off"
    min_power = "1.4 kW"                 # a limit below this switches the load off instead
    limit_step = "100 W"                 # limits are rounded down to this step
    comfort = { max_off = "2h", window = "6h" }   # at most 2 h shed in any 6 h

Only ``name``, ``actuator`` and ``rated_power`` are required.  The address
after ``mqtt:`` is an MQTT topic (no wildcards); ``knx:`` takes a group
address (``1/2/3`` or ``1/234``); the others are checked by their adapters when
those exist (``han-gateway check`` dry-runs the mappings).

Not supported: loads with several stages (a 3-step heater is three loads),
and a load shared between rule folders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.rules._validate import Table
from gateway.rules.ast import Dim

__all__ = ["ACTUATOR_SCHEMES", "Comfort", "LoadSpec", "parse_actuator", "parse_load"]

ACTUATOR_SCHEMES = ("mqtt", "knx", "modbus", "bacnet", "zigbee")
LOAD_KEYS = ("name", "actuator", "rated_power", "priority", "classes", "min_on", "min_off",
             "max_shed", "recovery", "safe_state", "min_power", "limit_step", "comfort",
             "description")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_KNX3 = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{1,3})$")
_KNX2 = re.compile(r"^(\d{1,2})/(\d{1,4})$")

#: Longest fail-safe deadline accepted (a week).
MAX_SHED_LIMIT_S = 7 * 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Comfort:
    """At most ``max_off_s`` shed within any ``window_s``."""

    max_off_s: float
    window_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    name: str
    actuator: str
    rated_power_w: float
    priority: int = 5
    classes: tuple[str, ...] = ()
    min_on_s: float = 0.0
    min_off_s: float = 0.0
    max_shed_s: float = 4 * 3600.0
    recovery_s: float = 900.0
    safe_state: Literal["on", "off"] = "on"
    min_power_w: float = 0.0
    limit_step_w: float = 100.0
    comfort: Comfort | None = None
    description: str = ""
    file: str = ""

    @property
    def rated_kw(self) -> float:
        return self.rated_power_w / 1000.0


def parse_actuator(text: str) -> tuple[str, str] | str:
    """Split ``scheme:address``; returns ``(scheme, address)`` or a problem description."""
    scheme, sep, address = text.partition(":")
    if not sep or scheme not in ACTUATOR_SCHEMES:
        return f"expected <scheme>:<address> with scheme one of {', '.join(ACTUATOR_SCHEMES)}"
    if not address:
        return f"expected an address after {scheme}:"
    if scheme == "mqtt":
        if "+" in address or "#" in address or "\x00" in address:
            return "an MQTT topic to publish to cannot contain '+', '#' or NUL"
        if len(address.encode("utf-8")) > 65535:
            return "an MQTT topic is at most 65535 bytes"
    elif scheme == "knx":
        # options after "?" (e.g. ?status=1/2/4) are checked by the KNX adapter
        group = address.partition("?")[0]
        m3 = _KNX3.match(group)
        m2 = _KNX2.match(group)
        if m3 is not None:
            main, mid, sub = (int(g) for g in m3.groups())
            if main > 31 or mid > 7 or sub > 255:
                return "expected a KNX group address main/middle/sub within 31/7/255"
        elif m2 is not None:
            main, sub = (int(g) for g in m2.groups())
            if main > 31 or sub > 2047:
                return "expected a KNX group address main/sub within 31/2047"
        else:
            return "expected a KNX group address such as 1/2/3"
    return scheme, address


def parse_load(t: Table) -> LoadSpec | None:
    """Read one ``[[load]]`` table; problems go to ``t.problems``."""
    name = t.string("name", required=True)
    if name and not _NAME.match(name):
        t.problem("name", "expected a name of lower-case letters, digits and '_', starting "
                          "with a letter, at most 32 characters (it is used as load.<name> in "
                          "expressions)")
    actuator = t.string("actuator", required=True)
    if actuator:
        parsed = parse_actuator(actuator)
        if isinstance(parsed, str):
            t.problem("actuator", parsed)
    rated_kw = t.quantity("rated_power", Dim.POWER, default=None, required=True, lo=0.001,
                          hi=100_000.0)
    priority = t.integer("priority", default=5, lo=0, hi=1000)
    classes = t.strings("classes")
    for i, c in enumerate(classes):
        if not _CLASS.match(c):
            t.problem("classes", "expected a class name of lower-case letters, digits and '_'",
                      sub=(i,))
    min_on = t.quantity("min_on", Dim.DURATION, default=0.0, lo=0.0, hi=86400.0)
    min_off = t.quantity("min_off", Dim.DURATION, default=0.0, lo=0.0, hi=86400.0)
    max_shed = t.quantity("max_shed", Dim.DURATION, default=4 * 3600.0, lo=1.0,
                          hi=MAX_SHED_LIMIT_S)
    recovery = t.quantity("recovery", Dim.DURATION, default=900.0, lo=0.0, hi=86400.0)
    safe = t.string("safe_state", default="on")
    if safe not in ("on", "off"):
        t.problem("safe_state", f'expected "on" or "off", found {safe!r}')
    min_power = t.quantity("min_power", Dim.POWER, default=0.0, lo=0.0, hi=100_000.0)
    step = t.quantity("limit_step", Dim.POWER, default=0.1, lo=0.001, hi=100_000.0)
    description = t.string("description")
    comfort: Comfort | None = None
    raw_comfort = t.raw("comfort")
    if raw_comfort is not None:
        comfort = _comfort(t, raw_comfort)
    t.done(LOAD_KEYS)
    if (min_off is not None and max_shed is not None and max_shed < min_off):
        t.problem("max_shed", "the fail-safe deadline max_shed must not be shorter than min_off "
                              "(a shed load could then not be restored in time)")
    if comfort is not None and min_off is not None and comfort.max_off_s < min_off:
        t.problem("comfort", "comfort.max_off must be at least min_off (the load could never "
                             "be shed)")
    if (not t.ok or rated_kw is None or priority is None or min_on is None or min_off is None
            or max_shed is None or recovery is None or min_power is None or step is None):
        return None
    return LoadSpec(
        name=name,
        actuator=actuator,
        rated_power_w=rated_kw * 1000.0,
        priority=priority,
        classes=classes,
        min_on_s=min_on,
        min_off_s=min_off,
        max_shed_s=max_shed,
        recovery_s=recovery,
        safe_state="off" if safe == "off" else "on",
        min_power_w=min_power * 1000.0,
        limit_step_w=step * 1000.0,
        comfort=comfort,
        description=description,
        file=t.file,
    )


def _comfort(t: Table, raw: Any) -> Comfort | None:
    if not isinstance(raw, Mapping):
        t.problem("comfort", 'expected a table such as { max_off = "2h", window = "6h" }')
        return None
    sub = Table(raw, (*t.path, "comfort"), t.file, t.pos, t.problems)
    max_off = sub.quantity("max_off", Dim.DURATION, default=None, required=True, lo=1.0,
                           hi=MAX_SHED_LIMIT_S)
    window = sub.quantity("window", Dim.DURATION, default=None, required=True, lo=1.0,
                          hi=MAX_SHED_LIMIT_S)
    sub.done(("max_off", "window"))
    if max_off is not None and window is not None and max_off >= window:
        sub.problem("max_off", "expected max_off shorter than window")
        t.ok = False
        return None
    if not sub.ok:
        t.ok = False
    if max_off is None or window is None:
        return None
    return Comfort(max_off_s=max_off, window_s=window)
