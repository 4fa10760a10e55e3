"""Modbus adapter: a read-only meter server (SunSpec + flat float32 map) and a client actuator.

Server (Modbus Application Protocol v1.1b3; Modbus TCP, or RTU per Modbus over
Serial Line v1.02) through pymodbus 3.16's ``SimDevice``: one register block
per map (see :mod:`adapters.modbus.registers`), filled at the time of each
read from the bus's current state (``bus.last_snapshot`` of the configured
meter, ``last_status``, ``last_price``, ``dr_events``, ``load_states``), so a
poll always sees the newest snapshot and nothing waits in a queue.  The
SunSpec image is rebuilt only when the meter's snapshot changed.

Function codes 3 (read holding registers) and 4 (read input registers)
return the same registers.  Every write (FC 5, 6, 15, 16, 22, 23) and every
coil or discrete-input access is refused with exception 02 ILLEGAL DATA
ADDRESS: the spec's 01 ILLEGAL FUNCTION says the *function* is not allowed at
all, which tempts clients to retry with another function code (FC 16 -> 6),
while 02 names the address as the problem, which is what SunSpec devices
(SMA's SunSpec interface, for one) answer for read-only registers.  Refused
writes are counted and logged (once per minute at most).

Unit identifiers: the server answers ``unit_id``; on TCP also 255 (the
identifier the Modbus TCP implementation guide recommends for a directly
addressed server).  On TCP another identifier gets exception 0x0B (gateway
target failed to respond); on RTU it gets no answer at all, because other
slaves may share the line.

Security: Modbus has no authentication or encryption.  Bind the TCP server
to a trusted interface or VLAN.

Not supported: Modbus TCP security (TLS), ASCII framing, writable set points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from adapters.base import AdapterContext, Health
from adapters.modbus.client import ModbusActuator
from adapters.modbus.config import SUNSPEC_BASE, ModbusConfig, RtuListen, TcpListen
from adapters.modbus.registers import (
    FLAT_SIZE,
    SUNSPEC_SIZE,
    Identity,
    MeterValues,
    SignalState,
    flat_registers,
    meter_values,
    sunspec_registers,
)
from gateway.backoff import Backoff
from gateway.bus import Bus, LoadFeedback
from gateway.clock import Clock, RealClock
from gateway.errors import ConfigError
from gateway.model import LoadCommand, LoadState, Snapshot

log = logging.getLogger(__name__)

_READ_FCS = frozenset({3, 4})
_REFUSED_LOG_INTERVAL_S = 60.0
TCP_ANY_UNIT = 255


def _version() -> str:
    try:
        return version("han-gateway")
    except PackageNotFoundError:
        return ""


class _Units(SimCore):
    """pymodbus's datastore, answering only the configured unit identifiers.

    ``SimCore`` looks an unknown identifier up as device 0 and fails with a
    ``KeyError`` (answered as DEVICE FAILURE, a wrong answer for another
    slave's request).  Here an unknown unit gets exception 0x0B on TCP, and
    on RTU ``NoSuchIdException``, which the request handler (built with
    ``ignore_missing_devices``) answers with silence.
    """

    def __init__(self, devices: list[SimDevice], *, silent: bool) -> None:
        super().__init__(devices)
        self._ids = frozenset(d.id for d in devices)
        self._silent = silent

    def _unknown(self, device_id: int) -> ExcCodes | None:
        if device_id in self._ids:
            return None
        if self._silent:
            raise NoSuchIdException(f"unit {device_id} is not served here")
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        return self._unknown(device_id) or await super().async_getValues(
            device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        return self._unknown(device_id) or await super().async_setValues(
            device_id, func_code, address, values)


class ModbusAdapter:
    """The ``modbus`` adapter: see the module docstring and :mod:`adapters.modbus.client`."""

    name = "modbus"

    def __init__(self, *, gateway_id: str, config: ModbusConfig, meters: Iterable[str] = (),
                 clock: Clock | None = None) -> None:
        self.config = config
        self.gateway_id = gateway_id
        meters = tuple(meters)
        self.meter = config.meter or (meters[0] if meters else "")
        self._clock: Clock = clock or RealClock()
        self._bus: Bus | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._feedback_task: asyncio.Task[None] | None = None
        self._listening = False
        self._detail = "not started"
        self.actuator = ModbusActuator(timeout_s=config.client_timeout_s,
                                       retries=config.client_retries)
        self._counters: dict[str, int] = {"reads": 0, "refused": 0, "listen_errors": 0}
        self._refused_logged_at: float | None = None
        self._refused_since_log = 0
        self._seen: Snapshot | None = None
        self._values = MeterValues(values={})
        self._sunspec: list[int] = []
        self._load_order: list[str] = list(config.loads)
        self._three_phase = False
        self._identity = Identity(model=config.model_name, version=_version(),
                                  serial=gateway_id, unit_id=config.unit_id)
        self._regions: list[tuple[int, int, str]] = []  # (base, size, "sunspec"|"flat")
        if config.map in ("sunspec", "both"):
            self._regions.append((SUNSPEC_BASE, SUNSPEC_SIZE, "sunspec"))
        if config.map in ("flat", "both"):
            self._regions.append((config.flat_base, FLAT_SIZE, "flat"))
        self._sunspec = sunspec_registers(self._values, self._identity, phases=self._phases())

    @classmethod
    def from_context(cls, context: AdapterContext, *, clock: Clock | None = None) -> ModbusAdapter:
        """Build from the supervisor's context (``context.config`` is validated here).

        Raises:
            pydantic.ValidationError: the config section is invalid.
            ConfigError: ``meter`` names no configured meter.
        """
        raw = context.config
        config = raw if isinstance(raw, ModbusConfig) else ModbusConfig.model_validate(dict(raw))
        if config.meter is not None and context.meters and config.meter not in context.meters:
            raise ConfigError([("", "adapter.modbus.meter",
                                f"no meter {config.meter!r}; configured: "
                                f"{', '.join(context.meters)}")])
        return cls(gateway_id=context.gateway_id, config=config, meters=context.meters,
                   clock=clock)

    # ------------------------------------------------------------ lifecycle
    async def start(self, bus: Bus) -> None:
        """Start serving (first attempt awaited; retries are an internal task)."""
        self._bus = bus
        listen = self.config.listen_spec
        if listen is None:
            self._detail = "no server (client actuator only)"
        elif not await self._try_listen():
            self._serve_task = asyncio.create_task(self._listen_loop(), name="adapter:modbus:listen")
        if self.config.feedback_interval_s > 0:
            self._feedback_task = asyncio.create_task(self._feedback_loop(),
                                                      name="adapter:modbus:feedback")

    async def stop(self) -> None:
        for task in (self._serve_task, self._feedback_task):
            if task is not None and not task.done():
                task.cancel()
                # wait() rather than awaiting the task: a cancellation of stop() itself
                # must propagate, not be taken for the task's own
                await asyncio.wait({task})
        self._serve_task = self._feedback_task = None
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        self._listening = False
        self._detail = "stopped"
        self.actuator.close()

    def health(self) -> Health:
        counters = {**self._counters, **self.actuator.counters}
        ok = self._listening or self.config.listen_spec is None
        return Health(ok=ok, detail=self._detail, counters=counters)

    async def apply(self, cmd: LoadCommand) -> LoadState:
        """Switch a load through a ``modbus:`` actuator (see :mod:`adapters.modbus.client`).

        Raises:
            AdapterError: bad address, device unreachable or refusing.
        """
        state = await self.actuator.apply(cmd, self._clock.now())
        return state

    # ------------------------------------------------------------ server
    def _make_server(self) -> ModbusTcpServer | ModbusSerialServer:
        listen = self.config.listen_spec
        ids = [self.config.unit_id]
        if isinstance(listen, TcpListen) and self.config.unit_id != TCP_ANY_UNIT:
            ids.append(TCP_ANY_UNIT)
        devices = [SimDevice(id=i, simdata=[SimData(address=base, count=size,
                                                    datatype=DataType.REGISTERS)
                                            for base, size, _ in self._regions],
                             action=self._action) for i in ids]
        identity = ModbusDeviceIdentification(info_name={  # type: ignore[no-untyped-call]
            "VendorName": "han-gateway", "ProductCode": "HAN", "ProductName": self.config.model_name,
            "ModelName": self.config.model_name, "MajorMinorRevision": self._identity.version})
        server: ModbusTcpServer | ModbusSerialServer
        if isinstance(listen, TcpListen):
            server = ModbusTcpServer(devices, address=(listen.host, listen.port),
                                     framer=FramerType.SOCKET, identity=identity)
        else:
            assert isinstance(listen, RtuListen)
            server = ModbusSerialServer(devices, framer=FramerType.RTU, identity=identity,
                                        port=listen.device, baudrate=listen.baudrate,
                                        parity=listen.parity, stopbits=listen.stopbits,
                                        bytesize=listen.bytesize, ignore_missing_devices=True)
        server.context = _Units(devices, silent=isinstance(listen, RtuListen))
        return server

    async def _try_listen(self) -> bool:
        server = self._make_server()
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as exc:
            self._counters["listen_errors"] += 1
            self._detail = f"cannot listen on {self.config.listen}: {exc}"
            if self._counters["listen_errors"] == 1:
                log.error("Modbus server: %s; retrying", self._detail)
            with contextlib.suppress(RuntimeError, OSError):
                await server.shutdown()  # type: ignore[no-untyped-call]
            return False
        self._server = server
        self._listening = True
        self._detail = f"serving {self.config.listen} unit {self.config.unit_id}"
        log.info("Modbus server %s", self._detail)
        return True

    async def _listen_loop(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            await self._clock.sleep(backoff.next_delay())
            if await self._try_listen():
                return

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int],
                      set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus's hook, called before every access: refuse or fill in the values."""
        if set_values is not None or function_code not in _READ_FCS:
            self._refuse(function_code, address, count)
            return ExcCodes.ILLEGAL_ADDRESS
        self._counters["reads"] += 1
        end = address + count
        for base, size, kind in self._regions:
            lo, hi = max(address, base), min(end, base + size)
            if lo >= hi:
                continue
            image = self._sunspec_image() if kind == "sunspec" else self._flat_image()
            current_registers[lo - start_address: hi - start_address] = image[lo - base: hi - base]
        return None

    def _refuse(self, function_code: int, address: int, count: int) -> None:
        self._counters["refused"] += 1
        self._refused_since_log += 1
        now = self._clock.monotonic()
        last = self._refused_logged_at
        if last is None or now - last >= _REFUSED_LOG_INTERVAL_S:
            log.warning("Modbus server: refused function %d at address %d (count %d): the "
                        "registers are read-only (%d refused since the last warning)",
                        function_code, address, count, self._refused_since_log)
            self._refused_logged_at = now
            self._refused_since_log = 0

    # ------------------------------------------------------------ images
    def _current(self) -> MeterValues:
        bus = self._bus
        snap = bus.last_snapshot.get(self.meter) if bus is not None else None
        if snap is not self._seen:
            self._seen = snap
            self._values = meter_values(snap)
            self._sunspec = sunspec_registers(self._values, self._identity, phases=self._phases())
        return self._values

    def _phases(self) -> int:
        if self.config.phases != "auto":
            return self.config.phases
        # Sticky: once the meter showed three phases, a telegram that lacks the
        # L2/L3 values does not turn the device into a single-phase meter.
        self._three_phase = self._three_phase or self._values.phases() == 3
        return 3 if self._three_phase else 1

    def _sunspec_image(self) -> list[int]:
        self._current()
        return self._sunspec

    def _flat_image(self) -> list[int]:
        mv = self._current()
        bus = self._bus
        sig = SignalState()
        if bus is not None:
            for name in bus.load_states:
                if name not in self._load_order:
                    self._load_order.append(name)
            status = bus.last_status.get(self.meter)
            sig = SignalState(price=bus.last_price, dr_events=bus.dr_events,
                              loads=bus.load_states, load_order=self._load_order,
                              meter_online=None if status is None else status.online)
        return flat_registers(mv, sig, self._clock.now())

    @property
    def load_order(self) -> Sequence[str]:
        return tuple(self._load_order)

    # ------------------------------------------------------------ feedback
    async def _feedback_loop(self) -> None:
        """Poll the actuated addresses; publish ``LoadFeedback`` when a device changed.

        A device that does not answer is polled again after a backoff (from the
        poll interval up to ``reconnect_max_s``), not every interval.
        """
        interval = self.config.feedback_interval_s
        backoffs: dict[str, Backoff] = {}
        not_before: dict[str, float] = {}
        while True:
            await self._clock.sleep(interval)
            for actuator, (addr, last_on) in list(self.actuator.known.items()):
                if self._clock.monotonic() < not_before.get(actuator, 0.0):
                    continue
                on = await self.actuator.poll(actuator)
                if on is None:
                    backoff = backoffs.setdefault(actuator, Backoff(
                        interval, max(interval, self.config.reconnect_max_s)))
                    not_before[actuator] = self._clock.monotonic() + backoff.next_delay()
                    continue
                backoffs.pop(actuator, None)
                not_before.pop(actuator, None)
                if on == last_on or self.actuator.known.get(actuator, (addr, on))[1] != last_on:
                    continue  # unchanged, or a command changed it while we polled
                self.actuator.known[actuator] = (addr, on)
                if self._bus is not None:
                    self._bus.publish(LoadFeedback(actuator=actuator, on=on,
                                                   at=self._clock.now()))
