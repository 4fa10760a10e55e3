"""Configuration of the Modbus adapter (``[adapter.modbus]`` in gateway.toml).

``listen`` names where the server answers:

* ``tcp://HOST:PORT`` -- Modbus TCP (MBAP framing), e.g. ``tcp://0.0.0.0:502`` or
  ``tcp://[::1]:1502``; the port defaults to 502.
* ``rtu:///dev/ttyUSB1?baudrate=9600&parity=E&stopbits=1&bytesize=8`` -- Modbus RTU on
  a serial line (RS-485 adapter).  ``baudrate`` defaults to 19200 and ``parity`` to
  ``E`` (the Modbus over Serial Line spec v1.02 §2.5.1 default, 8E1); ``N`` with one
  stop bit is common too, and the spec asks for two stop bits without parity.
* ``""`` (empty) -- no server: only the client actuator is used.

Validated once into a frozen pydantic model; nothing downstream sees a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.modbus.registers import FLAT_SIZE, SUNSPEC_SIZE

SUNSPEC_BASE = 40000  # protocol address of the 'SunS' marker ("40001" in 1-based tools)

_SERIAL_KEYS = {"baudrate", "parity", "stopbits", "bytesize"}


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpListen:
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RtuListen:
    device: str
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = 1
    bytesize: int = 8


Listen = TcpListen | RtuListen


def parse_listen(text: str) -> Listen | None:
    """``tcp://host:port`` or ``rtu:///dev/tty...?baudrate=..`` -> a listen spec (None if empty).

    Raises:
        ValueError: the text is neither form, or a parameter is out of range.
    """
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme == "tcp":
        if not parts.hostname:
            raise ValueError("expected tcp://HOST:PORT, e.g. tcp://0.0.0.0:502")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("the port is not a number in 0..65535") from exc
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("expected tcp://HOST:PORT without a path or query")
        return TcpListen(host=parts.hostname, port=502 if port is None else port)
    if parts.scheme == "rtu":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("expected rtu:///dev/ttyX?baudrate=9600&parity=E (three slashes)")
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(query) - _SERIAL_KEYS)
        if unknown:
            raise ValueError(f"unknown serial parameter(s) {', '.join(unknown)}; "
                             f"expected {', '.join(sorted(_SERIAL_KEYS))}")
        one = {k: v[-1] for k, v in query.items()}
        try:
            baudrate = int(one.get("baudrate", "19200"))
            stopbits = int(one.get("stopbits", "1"))
            bytesize = int(one.get("bytesize", "8"))
        except ValueError as exc:
            raise ValueError("baudrate, stopbits and bytesize are numbers") from exc
        parity = one.get("parity", "E").upper()
        if parity not in ("N", "E", "O"):
            raise ValueError("parity is N, E or O")
        if not 300 <= baudrate <= 4_000_000 or stopbits not in (1, 2) or bytesize not in (7, 8):
            raise ValueError("expected 300 <= baudrate <= 4000000, stopbits 1|2, bytesize 7|8")
        return RtuListen(device=parts.path, baudrate=baudrate, parity=parity,  # type: ignore[arg-type]
                         stopbits=stopbits, bytesize=bytesize)
    raise ValueError("expected tcp://HOST:PORT or rtu:///dev/ttyX?baudrate=9600&parity=E")


class ModbusConfig(BaseModel):
    """Keys of ``[adapter.modbus]``.

    ``map`` chooses what the server exposes: the SunSpec models at 40000, the
    flat float32 map at ``flat_base``, or both.  Registers answer function
    codes 3 (holding) and 4 (input) alike; every write is refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "tcp://0.0.0.0:502"
    unit_id: int = Field(default=1, ge=1, le=247)
    meter: str | None = None  # which meter feeds the registers; default: the first configured
    map: Literal["sunspec", "flat", "both"] = "both"
    flat_base: int = Field(default=0, ge=0, le=65535 - FLAT_SIZE + 1)
    phases: Literal["auto", 1, 3] = "auto"  # SunSpec model 201 (1) or 203 (3); auto: from readings
    model_name: str = Field(default="han-gateway HAN bridge", max_length=32)  # SunSpec Md
    loads: list[str] = Field(default_factory=list)  # fixed order of load slots in the flat map
    # client actuator (modbus:host:port/unit/...)
    client_timeout_s: float = Field(default=3.0, gt=0, le=60)
    client_retries: int = Field(default=1, ge=0, le=5)
    feedback_interval_s: float = Field(default=30.0, ge=0)  # poll actuated addresses; 0 = never
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("loads")
    @classmethod
    def _loads(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a load is listed twice")
        if len(v) > 16:
            raise ValueError("the flat map has 16 load slots")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModbusConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be smaller than reconnect_min_s")
        if self.map == "both" and self.flat_base < SUNSPEC_BASE + SUNSPEC_SIZE \
                and self.flat_base + FLAT_SIZE > SUNSPEC_BASE:
            raise ValueError(f"flat_base overlaps the SunSpec block "
                             f"{SUNSPEC_BASE}..{SUNSPEC_BASE + SUNSPEC_SIZE - 1}")
        return self

    @property
    def listen_spec(self) -> Listen | None:
        return parse_listen(self.listen)
