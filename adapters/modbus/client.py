"""Modbus TCP client actuator: switches relays, EV chargers and heat pumps for the rule engine.

Address syntax (the part after ``modbus:`` of a load's ``actuator``)::

    HOST[:PORT]/UNIT/coil:ADDR[/limit:LADDR[*FACTOR][=RESTORE]]
    HOST[:PORT]/UNIT/hr:ADDR=ON,OFF[/limit:LADDR[*FACTOR][=RESTORE]]

* ``HOST`` a name, an IPv4 address or ``[IPv6]``; ``PORT`` defaults to 502.
* ``UNIT`` the unit identifier 0..255 (many TCP devices answer 1 or 255).
* ``ADDR``/``LADDR`` 0-based protocol addresses 0..65535 (register 40001 of a
  1-based manual is ``hr:0``; ``hr:40001`` means protocol address 40001).
* ``coil:ADDR``: RESTORE writes the coil ON (FC 5, 0xFF00), SHED writes it OFF.
* ``hr:ADDR=ON,OFF``: RESTORE writes the holding register ``ON``, SHED writes
  ``OFF`` (FC 6; decimal or ``0x`` hex, 0..65535).
* ``/limit:LADDR``: LIMIT writes ``round(limit_w * FACTOR)`` (default FACTOR 1,
  i.e. watts; ``*0.001449`` gives amps for a 3 x 230 V charger) to holding
  register ``LADDR``, then switches on.  With ``=RESTORE`` a RESTORE first
  writes that raw value back to ``LADDR`` (the device's "no limit"), otherwise
  RESTORE leaves the limit register alone.
* LIMIT on an address without ``/limit`` switches the load OFF: a relay cannot
  run at a reduced power, and off is the side that honours "no more than".

Only addresses named in a command's actuator are ever written.  After each
write the coil or register is read back, and the returned ``LoadState`` says
what the device reports (a register holding anything but ``OFF`` counts as on).  Connections are opened on demand, one per
``host:port``, with ``client_timeout_s`` per request and ``client_retries``;
a failed request closes the connection so the next command opens a new one.
``feedback_interval_s`` polls the addresses of past commands and publishes a
``LoadFeedback`` when a device changed by itself (a manual switch).

Not supported: Modbus RTU clients (serial line actuators), float32 or 32-bit
limit registers, writing several coils per load.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.errors import AdapterError
from gateway.model import LoadAction, LoadCommand, LoadState

log = logging.getLogger(__name__)

_NUM = r"(?:0[xX][0-9a-fA-F]{1,4}|\d{1,5})"
_ADDRESS = re.compile(
    r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d{1,5}))?"
    r"/(?P<unit>\d{1,3})"
    r"/(?P<kind>coil|hr):(?P<addr>\d{1,5})(?:=(?P<on>" + _NUM + r"),(?P<off>" + _NUM + r"))?"
    r"(?:/limit:(?P<laddr>\d{1,5})(?:\*(?P<factor>\d+(?:\.\d+)?(?:[eE]-?\d+)?))?"
    r"(?:=(?P<restore>" + _NUM + r"))?)?$"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusAddress:
    host: str
    port: int
    unit: int
    kind: str  # "coil" | "hr"
    address: int
    on_value: int = 1
    off_value: int = 0
    limit_address: int | None = None
    limit_factor: float = 1.0
    limit_restore: int | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port

    def limit_raw(self, limit_w: float) -> int:
        return max(0, min(0xFFFF, round(limit_w * self.limit_factor)))


def _num(text: str) -> int:
    return int(text, 16) if text[:2].lower() == "0x" else int(text)


def parse_address(text: str) -> ModbusAddress | str:
    """The part after ``modbus:`` -> a ``ModbusAddress``, or a description of the problem."""
    m = _ADDRESS.match(text)
    if m is None:
        return ("expected HOST[:PORT]/UNIT/coil:ADDR or HOST[:PORT]/UNIT/hr:ADDR=ON,OFF, "
                "optionally followed by /limit:ADDR[*FACTOR][=RESTORE]")
    port = int(m["port"]) if m["port"] else 502
    unit = int(m["unit"])
    numbers = [int(m["addr"])] + [_num(m[k]) for k in ("on", "off", "restore") if m[k]]
    if m["laddr"]:
        numbers.append(int(m["laddr"]))
    if not 1 <= port <= 65535:
        return "the port is a number in 1..65535"
    if unit > 255:
        return "the unit identifier is a number in 0..255"
    if any(n > 0xFFFF for n in numbers):
        return "addresses and register values are numbers in 0..65535"
    if m["kind"] == "hr" and m["on"] is None:
        return "a holding register needs the values to write: hr:ADDR=ON,OFF"
    if m["kind"] == "coil" and m["on"] is not None:
        return "a coil is written ON/OFF: coil:ADDR takes no values"
    factor = float(m["factor"]) if m["factor"] else 1.0
    if factor <= 0:
        return "the limit factor must be positive"
    host = m["host"][1:-1] if m["host"].startswith("[") else m["host"]
    return ModbusAddress(
        host=host, port=port, unit=unit, kind=m["kind"], address=int(m["addr"]),
        on_value=_num(m["on"]) if m["on"] else 1, off_value=_num(m["off"]) if m["off"] else 0,
        limit_address=int(m["laddr"]) if m["laddr"] else None, limit_factor=factor,
        limit_restore=_num(m["restore"]) if m["restore"] else None,
    )


def actuator_problem(address: str) -> str | None:
    parsed = parse_address(address)
    return parsed if isinstance(parsed, str) else None


class _Endpoint:
    """One TCP connection to one device (or gateway), opened on demand."""

    def __init__(self, host: str, port: int, *, timeout_s: float, retries: int) -> None:
        self.host, self.port = host, port
        self.lock = asyncio.Lock()
        self._timeout_s = timeout_s
        self._retries = retries
        self._client: AsyncModbusTcpClient | None = None
        self.last_used = 0.0

    async def client(self) -> AsyncModbusTcpClient:
        client = self._client
        if client is not None and client.connected:
            return client
        self.close()
        # reconnect_delay=0: pymodbus must not reconnect behind our back; the next command does.
        client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self._timeout_s,
                                      retries=self._retries, reconnect_delay=0)
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            raise AdapterError(f"cannot connect to Modbus device {self.host}:{self.port}",
                               adapter="modbus")
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ModbusActuator:
    """Writes load commands to Modbus TCP devices; see the module docstring."""

    def __init__(self, *, timeout_s: float, retries: int) -> None:
        self._timeout_s = timeout_s
        self._retries = retries
        self._endpoints: dict[tuple[str, int], _Endpoint] = {}
        self.known: dict[str, tuple[ModbusAddress, bool]] = {}  # actuator -> (address, last on)
        self.counters = {"commands": 0, "command_errors": 0}

    def _endpoint(self, addr: ModbusAddress) -> _Endpoint:
        ep = self._endpoints.get(addr.endpoint)
        if ep is None:
            ep = self._endpoints[addr.endpoint] = _Endpoint(
                addr.host, addr.port, timeout_s=self._timeout_s, retries=self._retries)
        return ep

    async def apply(self, cmd: LoadCommand, now: datetime) -> LoadState:
        """Carry out ``cmd`` and read the result back.

        Raises:
            AdapterError: the address is invalid (not retryable), the device cannot be
                reached, times out or answers with a Modbus exception.
        """
        scheme, _, rest = cmd.actuator.partition(":")
        parsed = parse_address(rest) if scheme == "modbus" else "not a modbus: actuator"
        if isinstance(parsed, str):
            raise AdapterError(f"load {cmd.load}: bad actuator {cmd.actuator!r}: {parsed}",
                               adapter="modbus", retryable=False)
        addr = parsed
        self.counters["commands"] += 1
        reason = cmd.reason
        limit_w: float | None = None
        writes: list[tuple[str, int, int]] = []  # (kind, address, value)
        switch_on: bool
        if cmd.action is LoadAction.RESTORE:
            if addr.limit_address is not None and addr.limit_restore is not None:
                writes.append(("hr", addr.limit_address, addr.limit_restore))
            switch_on = True
        elif cmd.action is LoadAction.SHED:
            switch_on = False
        elif addr.limit_address is not None and cmd.limit_w is not None:
            writes.append(("hr", addr.limit_address, addr.limit_raw(cmd.limit_w)))
            limit_w = cmd.limit_w
            switch_on = True
        else:
            switch_on = False
            reason = f"{cmd.reason} (limit without a limit register or limit_w: off)"
        if addr.kind == "coil":
            writes.append(("coil", addr.address, 1 if switch_on else 0))
        else:
            writes.append(("hr", addr.address, addr.on_value if switch_on else addr.off_value))
        ep = self._endpoint(addr)
        try:
            async with ep.lock:
                client = await ep.client()
                for kind, where, value in writes:
                    if kind == "coil":
                        rsp = await client.write_coil(where, bool(value), device_id=addr.unit)
                    else:
                        rsp = await client.write_register(where, value, device_id=addr.unit)
                    _check(rsp, addr, f"write {kind}:{where}")
                on = await self._read_state(client, addr)
        except ModbusException as exc:
            ep.close()
            self.counters["command_errors"] += 1
            raise AdapterError(f"Modbus device {addr.host}:{addr.port} unit {addr.unit}: {exc}",
                               adapter="modbus") from exc
        except AdapterError:
            ep.close()
            self.counters["command_errors"] += 1
            raise
        self.known[cmd.actuator] = (addr, on)
        return LoadState(load=cmd.load, on=on, since=now, reason=reason, rule=cmd.rule,
                         limit_w=limit_w if on else None, until=cmd.until)

    async def _read_state(self, client: AsyncModbusTcpClient, addr: ModbusAddress) -> bool:
        if addr.kind == "coil":
            rsp = await client.read_coils(addr.address, count=1, device_id=addr.unit)
            _check(rsp, addr, f"read coil:{addr.address}")
            return bool(rsp.bits[0])
        rsp = await client.read_holding_registers(addr.address, count=1, device_id=addr.unit)
        _check(rsp, addr, f"read hr:{addr.address}")
        return int(rsp.registers[0]) != addr.off_value

    async def poll(self, actuator: str) -> bool | None:
        """The device's current state of a known actuator (None: unreachable)."""
        entry = self.known.get(actuator)
        if entry is None:
            return None
        addr = entry[0]
        ep = self._endpoint(addr)
        try:
            async with ep.lock:
                client = await ep.client()
                return await self._read_state(client, addr)
        except (ModbusException, AdapterError) as exc:
            ep.close()
            log.debug("feedback poll of %s failed: %s", actuator, exc)
            return None

    def close(self) -> None:
        for ep in self._endpoints.values():
            ep.close()


def _check(rsp: object, addr: ModbusAddress, what: str) -> None:
    is_error = getattr(rsp, "isError", None)
    if is_error is not None and is_error():
        code = getattr(rsp, "exception_code", None)
        raise AdapterError(
            f"Modbus device {addr.host}:{addr.port} unit {addr.unit} refused {what}: "
            f"exception code {code}", adapter="modbus", retryable=False)
