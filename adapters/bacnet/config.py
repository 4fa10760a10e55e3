"""Configuration of the BACnet adapter (``[adapter.bacnet]`` in gateway.toml).

Validated once into a frozen pydantic model.  Object instances are fixed by
this config (see the README's "BACnet" section), so a BMS keeps its mapping
across restarts:

- Analog Input ``1000 * m + n`` for the n-th quantity (1-based) of the m-th
  configured meter (0-based): in the order of ``quantities`` when given, else
  in the order the meter first reports them; ``instances`` pins any of them.
- Analog Value 1: the price; Multi-state Value 1: tariff, 2: DR level.
- Binary Value ``i`` (1..999): the state of a load; Binary Value ``1000 + i``:
  its manual override, where ``override = true``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.bacnet.address import LocalAddress, parse_host_port, parse_local_address

_POINT = re.compile(r"^(?:[A-Za-z0-9_-]+\.)?[a-z0-9_-]+$")
_LOAD = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ForeignDevice(BaseModel):
    """Register with a BBMD as a foreign device (the gateway on another subnet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bbmd: str  # host[:port]
    ttl_s: int = Field(default=300, ge=30, le=65535)

    @field_validator("bbmd")
    @classmethod
    def _bbmd(cls, v: str) -> str:
        parsed = parse_host_port(v)
        if isinstance(parsed, str):
            raise ValueError(parsed)
        return v


class LoadPoint(BaseModel):
    """How one load appears: its state object and, optionally, a manual override."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance: int = Field(ge=1, le=999)
    override: bool = False  # a commandable Binary Value 1000 + instance


class BacnetConfig(BaseModel):
    """Keys of ``[adapter.bacnet]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_instance: int = Field(ge=0, le=4194302)
    device_name: str = ""  # empty: "han-gateway-<gateway id>"
    address: str  # ip/prefix[:port], e.g. "192.168.1.10/24:47808"
    network_number: int | None = Field(default=None, ge=1, le=65534)
    vendor_identifier: int = Field(default=999, ge=0, le=65535)
    foreign_device: ForeignDevice | None = None
    bbmd_peers: tuple[str, ...] = ()  # act as BBMD with this BDT (ip/prefix:port, ours included)
    quantities: tuple[str, ...] = ()  # "<quantity>" or "<meter>.<quantity>"; empty: all numeric
    instances: dict[str, int] = Field(default_factory=dict)  # "<meter>.<quantity>" -> AI instance
    cov_increment: dict[str, float] = Field(default_factory=dict)  # quantity key or unit -> increment
    loads: dict[str, LoadPoint] = Field(default_factory=dict)
    tariff_states: int = Field(default=4, ge=2, le=16)
    dr_max_level: int = Field(default=3, ge=1, le=15)
    price_cov_increment: float = Field(default=0.001, ge=0)
    apdu_timeout_s: float = Field(default=3.0, gt=0, le=60)
    max_cov_subscriptions: int = Field(default=256, ge=1, le=10000)
    rebind_min_s: float = Field(default=1.0, gt=0)
    rebind_max_s: float = Field(default=60.0, gt=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parsed = parse_local_address(v)
        if isinstance(parsed, str):
            raise ValueError(parsed)
        return v

    @field_validator("bbmd_peers")
    @classmethod
    def _peers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for peer in v:
            parsed = parse_local_address(peer)
            if isinstance(parsed, str):
                raise ValueError(f"{peer!r}: {parsed}")
        return v

    @field_validator("quantities")
    @classmethod
    def _quantities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [q for q in v if not _POINT.match(q)]
        if bad:
            raise ValueError(f"expected <quantity> or <meter>.<quantity>, not {', '.join(map(repr, bad))}")
        if len(set(v)) != len(v):
            raise ValueError("a quantity is listed twice")
        return v

    @field_validator("instances")
    @classmethod
    def _instances(cls, v: dict[str, int]) -> dict[str, int]:
        for key, inst in v.items():
            if "." not in key or not _POINT.match(key):
                raise ValueError(f"{key!r}: expected <meter>.<quantity>")
            if not 1 <= inst <= 4194302:
                raise ValueError(f"{key!r}: instance must be within 1..4194302")
        if len(set(v.values())) != len(v):
            raise ValueError("two quantities pinned to the same instance")
        return v

    @field_validator("cov_increment")
    @classmethod
    def _increments(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, x in v.items() if x < 0)
        if bad:
            raise ValueError(f"negative increments for {', '.join(bad)}")
        return v

    @field_validator("loads")
    @classmethod
    def _loads(cls, v: dict[str, LoadPoint]) -> dict[str, LoadPoint]:
        bad = [k for k in v if not _LOAD.match(k)]
        if bad:
            raise ValueError(f"not load names: {', '.join(map(repr, bad))}")
        instances = [p.instance for p in v.values()]
        if len(set(instances)) != len(instances):
            raise ValueError("two loads share an instance")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BacnetConfig:
        if self.foreign_device is not None and self.bbmd_peers:
            raise ValueError("a device is either a foreign device or a BBMD, not both")
        if self.rebind_max_s < self.rebind_min_s:
            raise ValueError("rebind_max_s must not be smaller than rebind_min_s")
        return self

    # ----------------------------------------------------------- derived
    @property
    def local(self) -> LocalAddress:
        parsed = parse_local_address(self.address)
        assert not isinstance(parsed, str)  # checked by the validator
        return parsed

    def name_for(self, gateway_id: str) -> str:
        return self.device_name or f"han-gateway-{gateway_id}"
