"""Configuration of the KNX adapter (``[adapter.knx]`` in gateway.toml).

Validated once into frozen pydantic models.  Group addresses and datapoint
types are checked with xknx's own parsers, so what passes here is what xknx
will send.  The keyring password is a ``SecretStr``: never in ``repr``, logs or
``han-gateway check`` output.

Not supported: KNX IP Secure tunnelling over UDP (the standard defines secure
tunnelling over TCP only), user id / password secure tunnels without a keyring
file, automatic gateway discovery (the gateway is always named).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from xknx.dpt.dpt import DPTBase, DPTNumeric
from xknx.dpt.dpt_5 import DPTValue1ByteUnsigned
from xknx.exceptions import CouldNotParseAddress
from xknx.telegram import GroupAddress, IndividualAddress

from gateway.quantities import QUANTITIES

#: Values that do not come from a meter's readings.
SIGNAL_VALUES = ("price", "price_tier", "dr_level")
_ONE_BYTE_VALUES = frozenset({"price_tier", "dr_level", "tariff"})

_DPT20 = re.compile(r"^(?:DPT[- ]?)?20(?:\.\d{1,4})?$", re.IGNORECASE)

# unit -> (dimension, factor to the dimension's base unit); enough to turn the
# gateway's normalised units (W, kWh, V, A, ...) into a datapoint type's unit.
_UNITS: dict[str, tuple[str, float]] = {
    "W": ("power", 1.0), "kW": ("power", 1e3), "MW": ("power", 1e6),
    "Wh": ("energy", 1.0), "kWh": ("energy", 1e3), "MWh": ("energy", 1e6),
    "var": ("reactive_power", 1.0), "kvar": ("reactive_power", 1e3),
    "VA": ("apparent_power", 1.0), "kVA": ("apparent_power", 1e3),
    "varh": ("reactive_energy", 1.0), "kvarh": ("reactive_energy", 1e3),
    "mV": ("voltage", 1e-3), "V": ("voltage", 1.0), "kV": ("voltage", 1e3),
    "mA": ("current", 1e-3), "A": ("current", 1.0),
    "Hz": ("frequency", 1.0),
    "m³": ("volume", 1.0), "l": ("volume", 1e-3), "L": ("volume", 1e-3),
}


class UnitMismatch(ValueError):
    """A reading's unit and a datapoint type's unit measure different things."""


def unit_factor(source: str | None, target: str | None) -> float:
    """The factor turning a value in ``source`` into ``target`` (1.0 if either is unknown).

    Raises:
        UnitMismatch: both units are known and of different dimensions (kWh into W).
    """
    a = _UNITS.get(source) if source else None
    b = _UNITS.get(target) if target else None
    if a is None or b is None:
        return 1.0
    if a[0] != b[0]:
        raise UnitMismatch(f"a value in {source} cannot be sent as a datapoint in {target}")
    return a[1] / b[1]


def parse_group_address(text: str) -> GroupAddress:
    """A 3-level (``1/2/3``) or 2-level (``1/234``) group address; 0/0/0 is refused.

    Raises:
        ValueError: ``text`` is no such address.
    """
    if "/" not in text:
        raise ValueError(f"expected a group address such as 1/2/3, got {text!r}")
    try:
        ga = GroupAddress(text.strip())
    except CouldNotParseAddress as exc:
        raise ValueError(f"expected a group address such as 1/2/3, got {text!r}") from exc
    if ga.raw == 0:
        raise ValueError("group address 0/0/0 is the broadcast address")
    return ga


@dataclass(frozen=True, slots=True)
class Datapoint:
    """A resolved datapoint type: the xknx transcoder and the DPT as written in the config."""

    transcoder: type[DPTNumeric]
    main: int
    text: str

    @property
    def unit(self) -> str | None:
        return self.transcoder.unit


def resolve_dpt(text: str) -> Datapoint:
    """The transcoder for a numeric datapoint type (``"14.056"``, ``"9"``, ``"power"``).

    DPT 20 (1-octet enumeration, N8) is accepted for levels: xknx has
    transcoders only for two of its subtypes (HVAC modes), whose values are
    enum members, so the level is encoded as the unsigned octet DPT 5 uses,
    which is the same byte on the wire.

    Raises:
        ValueError: unknown or non-numeric datapoint type.
    """
    if _DPT20.match(text.strip()):
        return Datapoint(transcoder=DPTValue1ByteUnsigned, main=20, text=text)
    transcoder = DPTBase.parse_transcoder(text)
    if transcoder is None:
        raise ValueError(f"unknown datapoint type {text!r} (expected e.g. 14.056, 13.013, 9.024, 5.006)")
    if not issubclass(transcoder, DPTNumeric):
        raise ValueError(f"datapoint type {text!r} is not numeric")
    main = transcoder.dpt_main_number
    if main is None:
        raise ValueError(f"datapoint type {text!r} has no main number")
    return Datapoint(transcoder=transcoder, main=main, text=text)


class Exposure(BaseModel):
    """One ``[[adapter.knx.exposure]]``: a value sent to a group address.

    ``value`` is a meter quantity key (``power_import``, ``energy_import``,
    ``voltage_l1``, ``current_l1``, ``tariff``...; see gateway.quantities), or
    ``price`` (price per kWh), ``price_tier`` or ``dr_level`` (the highest
    level of the demand-response events in force, 0 when none).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str
    group_address: str
    dpt: str
    meter: str | None = None  # None: the quantity from whichever meter reports it
    deadband: float = Field(default=0.0, ge=0)  # in the DPT's unit; 0 = on every change
    min_interval_s: float = Field(default=0.0, ge=0)  # xknx's cooldown: the last value wins
    periodic_s: float = Field(default=0.0, ge=0)  # re-send the current value (0 = never)
    respond_to_read: bool = True

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_-]+", v):
            raise ValueError("expected a quantity key such as power_import, or price, price_tier, dr_level")
        return v

    @field_validator("group_address")
    @classmethod
    def _ga(cls, v: str) -> str:
        return str(parse_group_address(v))

    @field_validator("dpt")
    @classmethod
    def _dpt(cls, v: str) -> str:
        resolve_dpt(v)
        return v

    @model_validator(mode="after")
    def _fits(self) -> Exposure:
        dp = resolve_dpt(self.dpt)
        if self.value in _ONE_BYTE_VALUES and dp.main not in (5, 20):
            raise ValueError(f"{self.value} is sent as DPT 5 or DPT 20, not {self.dpt}")
        if self.value == "price" and dp.main not in (9, 14):
            raise ValueError(f"price is sent as DPT 9 or DPT 14, not {self.dpt}")
        if self.value in SIGNAL_VALUES and self.meter is not None:
            raise ValueError(f"{self.value} does not come from a meter: drop `meter`")
        q = QUANTITIES.get(self.value)
        if q is not None and q.unit is not None:
            try:
                unit_factor(q.unit, dp.unit)
            except UnitMismatch as exc:
                raise ValueError(str(exc)) from exc
        return self

    @property
    def datapoint(self) -> Datapoint:
        return resolve_dpt(self.dpt)

    @property
    def address(self) -> GroupAddress:
        return parse_group_address(self.group_address)


class KnxConfig(BaseModel):
    """Keys of ``[adapter.knx]``.

    ``connection`` is ``tunnelling`` (KNXnet/IP tunnelling over UDP),
    ``tunnelling_tcp`` or ``routing`` (multicast).  With ``keyring`` (an ETS
    ``.knxkeys`` export) the connection is KNX IP Secure: secure TCP
    tunnelling or secure routing; the keyring's Data Secure group keys are
    used too.  ``rate_limit_per_s`` is xknx's outgoing pacing (0 = none).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection: Literal["tunnelling", "tunnelling_tcp", "routing"] = "tunnelling"
    gateway_host: str | None = None  # the KNXnet/IP interface (tunnelling)
    gateway_port: int = Field(default=3671, ge=1, le=65535)
    local_ip: str | None = None  # the interface to use; None: the one routing to the gateway
    multicast_group: str = "224.0.23.12"
    multicast_port: int = Field(default=3671, ge=1, le=65535)
    individual_address: str | None = None  # routing: our source; tcp: the tunnel to ask for
    keyring: Path | None = None
    keyring_password: SecretStr | None = None
    keyring_password_file: Path | None = None  # first line is the password
    rate_limit_per_s: int = Field(default=20, ge=0, le=1000)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    exposure: tuple[Exposure, ...] = ()

    @field_validator("individual_address")
    @classmethod
    def _ia(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.fullmatch(r"\d{1,2}\.\d{1,2}\.\d{1,3}", v):
            raise ValueError("expected an individual address such as 1.1.250")
        try:
            return str(IndividualAddress(v))
        except CouldNotParseAddress as exc:
            raise ValueError("expected an individual address such as 1.1.250 (area.line.device)") from exc

    @model_validator(mode="after")
    def _consistent(self) -> KnxConfig:
        if self.connection != "routing" and not self.gateway_host:
            raise ValueError(f"connection = {self.connection!r} needs gateway_host")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be smaller than reconnect_min_s")
        if self.keyring_password is not None and self.keyring_password_file is not None:
            raise ValueError("give either keyring_password or keyring_password_file, not both")
        if self.keyring is None and (self.keyring_password is not None
                                     or self.keyring_password_file is not None):
            raise ValueError("a keyring password without `keyring` (the .knxkeys file)")
        if self.keyring is not None and self.connection == "tunnelling":
            raise ValueError('KNX IP Secure tunnelling runs over TCP: use connection = "tunnelling_tcp"')
        seen: dict[str, int] = {}
        for i, e in enumerate(self.exposure):
            if e.group_address in seen:
                raise ValueError(
                    f"exposure[{i}] uses group address {e.group_address} of exposure[{seen[e.group_address]}]"
                )
            seen[e.group_address] = i
        if not all(math.isfinite(e.deadband) for e in self.exposure):
            raise ValueError("deadbands must be finite")
        return self

    # ----------------------------------------------------------- derived
    @property
    def secure(self) -> bool:
        return self.keyring is not None

    @property
    def peer(self) -> str:
        """Where we connect, for log lines (never credentials)."""
        if self.connection == "routing":
            return f"routing {self.multicast_group}:{self.multicast_port}"
        kind = "TCP" if self.connection == "tunnelling_tcp" else "UDP"
        return f"tunnel {self.gateway_host}:{self.gateway_port}/{kind}"

    def exposed_addresses(self) -> frozenset[str]:
        return frozenset(e.group_address for e in self.exposure)

    def resolve_keyring_password(self, secrets: dict[str, str] | None = None) -> str | None:
        """The keyring password from ``keyring_password_file``, ``keyring_password`` or the secrets.

        Raises:
            OSError: ``keyring_password_file`` cannot be read.
        """
        if self.keyring_password_file is not None:
            text = self.keyring_password_file.read_text(encoding="utf-8")
            return text.splitlines()[0] if text else ""
        if self.keyring_password is not None:
            return self.keyring_password.get_secret_value()
        if secrets and "keyring_password" in secrets:
            return secrets["keyring_password"]
        return None
