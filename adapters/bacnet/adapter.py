"""BACnet/IP adapter: the gateway as a BACnet device, and a BACnet actuator.

ANSI/ASHRAE 135-2020 over BACnet/IP (Annex J), through bacpypes3's
``Application`` directly rather than BAC0: BAC0's ``ObjectFactory`` keeps a
class-level registry of every object ever created (two devices in one process,
or a rebind, would share it), it starts its own background tasks and, without
``ip=``, looks up the host address by "connecting" to a public host.  We need
none of that: one application, rebuilt on our terms.

The device (see :mod:`adapters.bacnet.config` for the instance numbers):

- an Analog Input per published quantity (``<meter>.<quantity>``) with its
  engineering units and COV increment, updated from the bus's snapshots;
- Analog Value 1 ``price`` (the current price per kWh), Multi-state Value 1
  ``tariff`` (the meter's tariff register, 1..``tariff_states``) and 2
  ``dr_level`` (1 = no event, 2.. = level 1..; from the active DR events);
- a Binary Value per load (``load.<name>``, active = on) from ``LoadState``;
- for loads configured with ``override = true`` a commandable Binary Value
  ``load.<name>.override`` (Binary Value 1000 + instance).  A write of active /
  inactive at any priority publishes ``OverrideRequest(mode="on"/"off")``;
  relinquishing the last slot publishes ``mode="auto"``.  Its relinquish
  default follows the load's state.
- COV subscriptions (SubscribeCOV) on all of them; Who-Is / I-Am; ReadProperty
  (Multiple).  Every other write is refused with write-access-denied and logged.

The actuator writes ``present-value`` of a commandable object on another device
at the priority named in the load's actuator address (see
:mod:`adapters.bacnet.address`), relinquishes on restore, reads the present
value back and publishes it as ``LoadFeedback``.

Lifecycle: ``start`` spawns the task that binds the UDP port (bacpypes3 retries
a failed bind every second by itself); the task watches the socket and rebuilds
the application with backoff when it is gone.  Nothing here raises into the
supervisor: a dead BACnet network leaves the meters and other adapters alone.

BACnet/IP has no authentication (BACnet/SC is not supported): see
:func:`adapters.bacnet.warnings`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bacpypes3.apdu import ErrorRejectAbortNack, WritePropertyMultipleError
from bacpypes3.app import Application
from bacpypes3.basetypes import BDTEntry, BinaryPV, EngineeringUnits, HostNPort, IPMode, Reliability
from bacpypes3.errors import ExecutionError
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import CharacterString, Null, ObjectIdentifier, Real, Unsigned

from adapters.base import AdapterContext, Health, Outbox
from adapters.bacnet.address import ActuatorAddress, parse_actuator
from adapters.bacnet.config import BacnetConfig
from adapters.bacnet.objects import (
    WRITE_SOURCE,
    GatewayAnalogInput,
    GatewayAnalogValue,
    GatewayBinaryValue,
    GatewayDevice,
    GatewayMultiStateValue,
    GatewayNetworkPort,
    OverrideBinaryValue,
    engineering_units,
    install_hooks,
)
from gateway.backoff import Backoff
from gateway.bus import Bus, LoadFeedback, OutboxChanged, OverrideRequest, OverrideResult, Subscription
from gateway.clock import Clock, RealClock
from gateway.errors import AdapterError, StoreError
from gateway.model import DemandResponseEvent, LoadAction, LoadCommand, LoadState, PriceSignal, Snapshot
from gateway.quantities import Quantity, normalised_value, quantities_for

log = logging.getLogger(__name__)

_BIND_CHECK_S = 2.0  # how often the socket is looked at
_BIND_WAIT_S = 5.0  # for bacpypes3 to bind after our probe succeeded
_REFUSAL_LOG_S = 10.0  # at most one warning per this many seconds about refused writes
OVERRIDE_OFFSET = 1000

# COV increments by unit when the config names none: small against a household's
# values, large against the noise of the last digit.
_DEFAULT_INCREMENT: dict[str, float] = {
    "W": 10.0, "kW": 0.01, "var": 10.0, "kvar": 0.01, "VA": 10.0, "kVA": 0.01,
    "Wh": 10.0, "kWh": 0.01, "varh": 10.0, "kvarh": 0.01,
    "V": 0.5, "A": 0.05, "Hz": 0.01, "m³": 0.001, "m³/h": 0.01, "°C": 0.1,
}


class _Application(Application):  # type: ignore[misc]
    """bacpypes3's application, noting who is writing (for the refusal log) and
    answering a refused WritePropertyMultiple (see below)."""

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        token = WRITE_SOURCE.set(str(apdu.pduSource))
        try:
            await super().do_WritePropertyRequest(apdu)
        finally:
            WRITE_SOURCE.reset(token)

    max_cov_subscriptions = 256

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        """Bound the subscriptions a peer can make us keep (bacpypes3 has no limit)."""
        cancel = apdu.issueConfirmedNotifications is None and apdu.lifetime is None
        if not cancel:
            subs = [c for d in self._cov_detections.values() for c in d.cov_subscriptions]
            known = any(c.client_addr == apdu.pduSource and c.proc_id == apdu.subscriberProcessIdentifier
                        and c.obj_id == apdu.monitoredObjectIdentifier for c in subs)
            if not known and len(subs) >= self.max_cov_subscriptions:
                # clause 13.14.1.3.2: the subscription list is full
                raise ExecutionError(errorClass="resources", errorCode="noSpaceToAddListElement")
        await super().do_SubscribeCOVRequest(apdu)

    async def do_WritePropertyMultipleRequest(self, apdu: Any) -> None:
        token = WRITE_SOURCE.set(str(apdu.pduSource))
        try:
            await super().do_WritePropertyMultipleRequest(apdu)
        except WritePropertyMultipleError as err:
            # bacpypes3 0.0.110 raises this PDU (a BaseException) without a context, and its
            # dispatcher catches only Exception: the writer would get no answer at all.
            err.set_context(apdu)
            err.apduService = apdu.apduService
            await self.response(err)
        finally:
            WRITE_SOURCE.reset(token)


@dataclass(slots=True)
class _Point:
    obj: Any
    quantity: Quantity


class BacnetAdapter:
    """The ``bacnet`` adapter: see the module docstring."""

    name = "bacnet"

    def __init__(self, *, gateway_id: str, config: BacnetConfig, outbox: Outbox | None = None,
                 meters: Iterable[str] = (), clock: Clock | None = None) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self._outbox = outbox
        self._meters = tuple(meters)
        self._clock: Clock = clock or RealClock()
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None
        self._app: _Application | None = None
        self._bound = False
        self._detail = "not started"
        self._backoff = Backoff(config.rebind_min_s, config.rebind_max_s)
        self._points: dict[tuple[str, str], _Point] = {}
        self._used_ai: set[int] = set(config.instances.values())
        self._next_ai: dict[str, int] = {}
        self._load_bv: dict[str, GatewayBinaryValue] = {}
        self._override_bv: dict[str, OverrideBinaryValue] = {}
        self._db_revision = 1  # device database-revision: bumped when objects are added
        self._load_instance: dict[str, int] = {n: p.instance for n, p in config.loads.items()}
        self._requests: dict[str, str] = {}  # override request id -> load
        self._objects: list[Any] = []  # every object but device and network port, in creation order
        self._price: GatewayAnalogValue | None = None
        self._tariff: GatewayMultiStateValue | None = None
        self._dr: GatewayMultiStateValue | None = None
        self._dr_timer: asyncio.TimerHandle | None = None
        self._last_refusal_log = -1e9
        self._counters: dict[str, int] = {
            "snapshots": 0, "writes_accepted": 0, "writes_refused": 0, "overrides": 0,
            "actuator_writes": 0, "actuator_failures": 0, "binds": 0, "rebinds": 0,
            "outbox_acked": 0,
        }

    @classmethod
    def from_context(cls, context: AdapterContext, *, clock: Clock | None = None) -> BacnetAdapter:
        """Build from the supervisor's context.

        Raises:
            pydantic.ValidationError: the config section is invalid.
        """
        raw = context.config
        config = raw if isinstance(raw, BacnetConfig) else BacnetConfig.model_validate(dict(raw))
        return cls(gateway_id=context.gateway_id, config=config, outbox=context.outbox,
                   meters=context.meters, clock=clock)

    # ------------------------------------------------------------ lifecycle
    async def start(self, bus: Bus) -> None:
        """Create the objects and spawn the task that binds and serves; returns at once."""
        if self._task is not None and not self._task.done():
            return
        self._bus = bus
        if not self._objects:
            self._create_fixed_objects()
        self._task = asyncio.create_task(self.run(bus), name=f"adapter:bacnet:{self.gateway_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._close_app()
        if self._dr_timer is not None:
            self._dr_timer.cancel()
            self._dr_timer = None
        self._detail = "stopped"

    async def run(self, bus: Bus) -> None:
        """Bind, serve the bus's values and rebind until cancelled."""
        self._bus = bus
        if not self._objects:
            self._create_fixed_objects()
        sub: Subscription[Any] = bus.subscribe(
            Snapshot, PriceSignal, DemandResponseEvent, LoadState, OverrideResult, OutboxChanged,
            maxsize=1000)
        try:
            self._catch_up(bus)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._events(sub), name="adapter:bacnet:events")
                await self._bind_loop()
        finally:
            sub.close()
            self._close_app()
            self._bound = False

    def health(self) -> Health:
        counters = dict(self._counters)
        app = self._app
        counters["cov_subscriptions"] = sum(
            len(d.cov_subscriptions) for d in app._cov_detections.values()) if app is not None else 0
        counters["objects"] = len(self._objects) + 2
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            return Health(ok=False, detail=f"crashed: {task.exception()!r}", counters=counters,
                          crashed=True)
        return Health(ok=self._bound, detail=self._detail, counters=counters)

    @property
    def bound(self) -> bool:
        return self._bound

    # ------------------------------------------------------------- binding
    def _build_app(self) -> _Application:
        cfg = self.config
        local = cfg.local
        device = GatewayDevice(
            objectIdentifier=("device", cfg.device_instance),
            objectName=cfg.name_for(self.gateway_id),
            vendorIdentifier=cfg.vendor_identifier,
            description="han-gateway: meter values, price, DR level and loads",
            databaseRevision=self._db_revision,
        )
        port = GatewayNetworkPort(
            f"{local.host}/{local.prefix}:{local.port}",
            objectIdentifier=("network-port", 1),
            objectName="NetworkPort-1",
            networkNumber=cfg.network_number or 0,
            networkNumberQuality="configured" if cfg.network_number else "unknown",
        )
        if cfg.foreign_device is not None:
            port.bacnetIPMode = IPMode.foreign
            port.fdBBMDAddress = HostNPort(cfg.foreign_device.bbmd)
            port.fdSubscriptionLifetime = cfg.foreign_device.ttl_s
        elif cfg.bbmd_peers:
            port.bacnetIPMode = IPMode.bbmd
            port.bbmdAcceptFDRegistrations = True
            port.bbmdForeignDeviceTable = []
            port.bbmdBroadcastDistributionTable = [BDTEntry(p) for p in cfg.bbmd_peers]
        for obj in (device, port):
            install_hooks(obj, refused=self._on_refused)
        app: _Application = _Application.from_object_list([device, port])
        app.max_cov_subscriptions = cfg.max_cov_subscriptions
        for obj in self._objects:
            app.add_object(obj)
        return app

    def _server(self) -> Any:
        app = self._app
        if app is None:
            return None
        for link in app.link_layers.values():
            return link.server
        return None

    def _socket_ok(self) -> bool:
        server = self._server()
        if server is None or not server._local_transport_ready.is_set():
            return False
        transport = server.local_transport
        return transport is not None and not transport.is_closing()

    def _probe_bind(self) -> str | None:
        """Bind the configured address once ourselves, as bacpypes3 will (SO_REUSEPORT).

        bacpypes3 retries a failed bind every second in a task of its own, forever and
        silently; probing first lets us report why and back off, and leaves no such
        task behind when the port stays busy.
        """
        local = self.config.local
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((local.host, local.port))
        except OSError as exc:
            return exc.strerror or repr(exc)
        finally:
            sock.close()
        return None

    async def _bind_loop(self) -> None:
        local = self.config.local
        failing = False
        while True:
            problem = self._probe_bind()
            if problem is not None:
                self._detail = f"cannot bind {local}: {problem}"
                if not failing:
                    log.warning("BACnet: %s; retrying", self._detail)
                    failing = True
                await self._clock.sleep(self._backoff.next_delay())
                continue
            try:
                self._app = self._build_app()
            except (OSError, RuntimeError, ValueError, TypeError) as exc:
                self._detail = f"cannot create the BACnet application: {exc}"
                log.error("BACnet: %s", self._detail)
                await self._clock.sleep(self._backoff.next_delay())
                continue
            self._detail = f"binding {local}"
            deadline = self._clock.monotonic() + _BIND_WAIT_S
            while not self._socket_ok() and self._clock.monotonic() < deadline:
                await self._clock.sleep(0.02)
            if not self._socket_ok():
                self._close_app()
                self._detail = f"cannot bind {local}: bacpypes3 did not bind within {_BIND_WAIT_S} s"
                log.warning("BACnet: %s; retrying", self._detail)
                await self._clock.sleep(self._backoff.next_delay())
                continue
            failing = False
            self._bound = True
            self._counters["binds"] += 1
            self._backoff.reset()
            self._detail = f"device {self.config.device_instance} on {local}"
            log.info("BACnet: device %d (%s) on %s", self.config.device_instance,
                     self.config.name_for(self.gateway_id), local)
            self._announce()
            while self._socket_ok():
                await self._clock.sleep(_BIND_CHECK_S)
            self._bound = False
            self._counters["rebinds"] += 1
            self._detail = f"socket on {local} lost; rebinding"
            log.warning("BACnet: %s", self._detail)
            self._close_app()
            await self._clock.sleep(self._backoff.next_delay())

    def _announce(self) -> None:
        """Broadcast I-Am once bound (clause 16.10: a device may announce itself at start)."""
        app, server = self._app, self._server()
        if app is None or server is None or not server.broadcast_address:
            return  # a /32 address has no broadcast: bacpypes3 would fail in a task of its own
        try:
            app.i_am()
        except (OSError, RuntimeError, ValueError) as exc:
            log.debug("BACnet: I-Am broadcast failed: %r", exc)

    def _close_app(self) -> None:
        app, self._app = self._app, None
        if app is None:
            return
        for det in list(app._cov_detections.values()):
            for cov in list(det.cov_subscriptions):
                cov.cancel_subscription()
            det.unbind()
        app._cov_detections.clear()
        for link in app.link_layers.values():
            for task in link.server._transport_tasks:
                task.cancel()  # a bind still being retried (lost the race with our probe)
        try:
            app.close()
        except (OSError, RuntimeError) as exc:
            log.debug("BACnet: closing the application: %r", exc)

    # -------------------------------------------------------------- objects
    def _add(self, obj: Any) -> None:
        install_hooks(obj, refused=self._on_refused)
        self._objects.append(obj)
        app = self._app
        if app is not None:
            app.add_object(obj)
            # the object list changed: clients that cache it re-read it (clause 12.11.35)
            self._db_revision += 1
            app.device_object.databaseRevision = self._db_revision

    def _create_fixed_objects(self) -> None:
        self._price = GatewayAnalogValue(
            objectIdentifier=("analog-value", 1), objectName="price",
            description="price per kWh (no price yet)", units=EngineeringUnits("noUnits"),
            presentValue=0.0, covIncrement=self.config.price_cov_increment,
            outOfService=False, reliability=Reliability.noSensor)
        self._add(self._price)
        n = self.config.tariff_states
        self._tariff = GatewayMultiStateValue(
            objectIdentifier=("multi-state-value", 1), objectName="tariff",
            description="the meter's tariff register", numberOfStates=n,
            stateText=[CharacterString(f"tariff {i}") for i in range(1, n + 1)],
            presentValue=1, outOfService=False, reliability=Reliability.noSensor)
        self._add(self._tariff)
        levels = self.config.dr_max_level
        self._dr = GatewayMultiStateValue(
            objectIdentifier=("multi-state-value", 2), objectName="dr_level",
            description="demand response level of the active events (1 = none)",
            numberOfStates=levels + 1,
            stateText=[CharacterString("no event")] + [CharacterString(f"level {i}") for i in range(1, levels + 1)],
            presentValue=1, outOfService=False)
        self._add(self._dr)
        for name in self.config.loads:
            self._load_object(name)

    def _load_object(self, name: str) -> GatewayBinaryValue:
        obj = self._load_bv.get(name)
        if obj is not None:
            return obj
        inst = self._load_instance.get(name)
        if inst is None:
            used = set(self._load_instance.values())
            inst = next(i for i in range(1, 1000) if i not in used)
            self._load_instance[name] = inst
        obj = GatewayBinaryValue(
            objectIdentifier=("binary-value", inst), objectName=f"load.{name}",
            description=f"load {name}: on (active) or off", presentValue="inactive",
            outOfService=False, activeText="on", inactiveText="off")
        self._load_bv[name] = obj
        self._add(obj)
        point = self.config.loads.get(name)
        if point is not None and point.override:
            ovr = OverrideBinaryValue(
                objectIdentifier=("binary-value", OVERRIDE_OFFSET + inst),
                objectName=f"load.{name}.override",
                description=f"manual override of load {name}: write on/off at a priority, "
                            "relinquish for automatic",
                presentValue="inactive", relinquishDefault="inactive", outOfService=False,
                activeText="on", inactiveText="off")
            install_hooks(ovr, refused=self._on_refused, written=self._on_override_written)
            self._override_bv[name] = ovr
            self._add(ovr)
        return obj

    def _instance_for(self, meter: str, key: str) -> int | None:
        cfg = self.config
        pinned = cfg.instances.get(f"{meter}.{key}")
        if pinned is not None:
            return pinned
        try:
            m = self._meters.index(meter)
        except ValueError:
            m = len(self._meters)
        base = 1000 * m
        if cfg.quantities:
            for pos, entry in enumerate(cfg.quantities, start=1):
                if entry in (key, f"{meter}.{key}"):
                    inst = base + pos
                    return None if inst in self._used_ai else inst
            return None
        n = self._next_ai.get(meter, 1)
        while base + n in self._used_ai:
            n += 1
        if n >= 1000:
            return None
        self._next_ai[meter] = n + 1
        return base + n

    def _selected(self, meter: str, key: str) -> bool:
        q = self.config.quantities
        return not q or key in q or f"{meter}.{key}" in q

    def _increment(self, q: Quantity) -> float:
        inc = self.config.cov_increment
        if q.key in inc:
            return inc[q.key]
        if q.unit is not None and q.unit in inc:
            return inc[q.unit]
        return _DEFAULT_INCREMENT.get(q.unit or "", 0.0)

    def _point(self, meter: str, q: Quantity) -> _Point | None:
        point = self._points.get((meter, q.key))
        if point is not None:
            return point
        inst = self._instance_for(meter, q.key)
        if inst is None:
            log.warning("BACnet: no free Analog Input instance for %s.%s; not published", meter, q.key)
            self._points[(meter, q.key)] = _Point(obj=None, quantity=q)
            return self._points[(meter, q.key)]
        self._used_ai.add(inst)
        obj = GatewayAnalogInput(
            objectIdentifier=("analog-input", inst), objectName=f"{meter}.{q.key}",
            description=f"{q.name} ({meter})", units=EngineeringUnits(engineering_units(q.unit)),
            presentValue=0.0, covIncrement=self._increment(q), outOfService=False,
            reliability=Reliability.noFaultDetected)
        point = _Point(obj=obj, quantity=q)
        self._points[(meter, q.key)] = point
        self._add(obj)
        return point

    # ---------------------------------------------------------- bus events
    def _catch_up(self, bus: Bus) -> None:
        for snap in bus.last_snapshot.values():
            self._on_snapshot(snap)
        if bus.last_price is not None:
            self._on_price(bus.last_price)
        for state in bus.load_states.values():
            self._on_load_state(state)
        self._update_dr()

    async def _events(self, sub: Subscription[Any]) -> None:
        async for item in sub:
            try:
                if isinstance(item, Snapshot):
                    self._on_snapshot(item)
                elif isinstance(item, PriceSignal):
                    self._on_price(item)
                elif isinstance(item, DemandResponseEvent):
                    self._update_dr()
                elif isinstance(item, LoadState):
                    self._on_load_state(item)
                elif isinstance(item, OverrideResult):
                    self._on_override_result(item)
                elif isinstance(item, OutboxChanged):
                    await self._drain_outbox()
            except (ValueError, TypeError, RuntimeError) as exc:
                # a value the object model cannot take must not end the adapter
                log.error("BACnet: cannot apply %s: %r", type(item).__name__, exc)

    def _on_snapshot(self, snap: Snapshot) -> None:
        self._counters["snapshots"] += 1
        for reading, q in quantities_for(snap):
            if q.key == "tariff":
                self._on_tariff(reading.value)
                continue
            value = normalised_value(reading, q)
            if isinstance(value, (str, bool)) or not self._selected(snap.meter, q.key):
                continue
            point = self._point(snap.meter, q)
            if point is None or point.obj is None:
                continue
            point.obj.presentValue = float(value)

    def _on_tariff(self, value: object) -> None:
        assert self._tariff is not None
        try:
            tariff = int(str(value), 10)
        except ValueError:
            return
        if 1 <= tariff <= self.config.tariff_states:
            self._tariff.presentValue = tariff
            self._tariff.reliability = Reliability.noFaultDetected

    def _on_price(self, price: PriceSignal) -> None:
        assert self._price is not None
        self._price.presentValue = float(price.price_per_kwh)
        self._price.description = f"price per kWh in {price.currency}"
        self._price.reliability = Reliability.noFaultDetected

    def _update_dr(self) -> None:
        assert self._dr is not None
        if self._dr_timer is not None:
            self._dr_timer.cancel()
            self._dr_timer = None
        bus = self._bus
        events = list(bus.dr_events.values()) if bus is not None else []
        now = self._clock.now()
        level = max((e.level for e in events if e.start <= now < e.end), default=0)
        self._dr.presentValue = 1 + max(0, min(level, self.config.dr_max_level))
        upcoming = [t for e in events for t in (e.start, e.end) if t > now]
        if upcoming:
            delay = (min(upcoming) - now).total_seconds()
            loop = asyncio.get_running_loop()
            self._dr_timer = loop.call_later(max(delay, 0.0) + 0.01, self._update_dr)

    def _on_load_state(self, state: LoadState) -> None:
        obj = self._load_object(state.load)
        obj.presentValue = "active" if state.on else "inactive"
        ovr = self._override_bv.get(state.load)
        if ovr is not None:
            ovr.relinquishDefault = BinaryPV("active" if state.on else "inactive")
            ovr.recalculating()

    # ----------------------------------------------------- writes from peers
    def _on_refused(self, obj: Any, prop: str) -> None:
        self._counters["writes_refused"] += 1
        now = self._clock.monotonic()
        who = WRITE_SOURCE.get()
        oid = obj.objectIdentifier
        if now - self._last_refusal_log >= _REFUSAL_LOG_S:
            self._last_refusal_log = now
            log.warning("BACnet: refused a write from %s to %s,%s %s (read-only; %d refused so far)",
                        who, oid[0], oid[1], prop, self._counters["writes_refused"])
        else:
            log.debug("BACnet: refused a write from %s to %s,%s %s", who, oid[0], oid[1], prop)

    def _on_override_written(self, obj: OverrideBinaryValue) -> None:
        self._counters["writes_accepted"] += 1
        load = next((n for n, o in self._override_bv.items() if o is obj), None)
        bus = self._bus
        if load is None or bus is None:
            return
        if obj.commanded():
            mode = "on" if obj.presentValue == BinaryPV("active") else "off"
        else:
            mode = "auto"
        rid = f"bacnet-{uuid.uuid4().hex[:12]}"
        self._requests[rid] = load
        if len(self._requests) > 1000:
            self._requests.pop(next(iter(self._requests)))
        self._counters["overrides"] += 1
        prio = obj.currentCommandPriority
        log.info("BACnet: override of load %s to %s from %s (priority %s)", load, mode,
                 WRITE_SOURCE.get(), getattr(prio, "unsigned", None))
        bus.publish(OverrideRequest(request_id=rid, load=load, mode=mode,
                                    source=f"bacnet:{WRITE_SOURCE.get()}"))

    def _on_override_result(self, result: OverrideResult) -> None:
        load = self._requests.pop(result.request_id, None)
        if load is not None and not result.ok:
            log.warning("BACnet: override of load %s refused by the rules: %s", load, result.reason)

    async def _drain_outbox(self) -> None:
        """Ack our outbox rows: BACnet shows live values only, there is nothing to forward."""
        outbox = self._outbox
        if outbox is None:
            return
        try:
            while True:
                items = await outbox.pending(limit=1000)
                if not items:
                    return
                await outbox.ack([i.id for i in items])
                self._counters["outbox_acked"] += len(items)
        except StoreError as exc:
            log.warning("BACnet: cannot ack outbox rows: %s", exc)

    # ------------------------------------------------------------ actuator
    async def apply(self, cmd: LoadCommand) -> LoadState:
        """Write the load's object at its priority; relinquish (or write) on restore.

        Raises:
            AdapterError: the address is wrong, the action does not fit the object
                (``retryable=False``), or the device did not accept or answer.
        """
        text = cmd.actuator.removeprefix("bacnet:")
        addr = parse_actuator(text)
        if isinstance(addr, str):
            raise AdapterError(f"{cmd.actuator}: {addr}", adapter=self.name, retryable=False)
        local = self.config.local
        if addr.port == local.port and (addr.host.startswith("127.") or addr.host == local.host):
            # bacpypes3 delivers such unicasts to itself (PEERS.md 3), never to the wire
            raise AdapterError(f"{cmd.actuator}: that is this gateway's own address",
                               adapter=self.name, retryable=False)
        value = self._command_value(cmd, addr)
        app = self._app
        if app is None or not self._bound:
            raise AdapterError("BACnet is not bound yet", adapter=self.name)
        target = Address(addr.device)
        oid = ObjectIdentifier((addr.object_type, addr.instance))
        try:
            async with asyncio.timeout(self.config.apdu_timeout_s):
                resp = await app.write_property(target, oid, "presentValue", value,
                                                priority=addr.priority)
                if isinstance(resp, ErrorRejectAbortNack):
                    raise AdapterError(f"{cmd.actuator}: write refused: {_error_text(resp)}",
                                       adapter=self.name)
                pv = await app.read_property(target, oid, "presentValue")
        except TimeoutError:
            self._counters["actuator_failures"] += 1
            raise AdapterError(f"{cmd.actuator}: no answer within {self.config.apdu_timeout_s} s",
                               adapter=self.name) from None
        except AdapterError:
            self._counters["actuator_failures"] += 1
            raise
        except ErrorRejectAbortNack as exc:  # bacpypes3 raises the device's Error/Reject/Abort
            self._counters["actuator_failures"] += 1
            raise AdapterError(f"{cmd.actuator}: refused by the device: {_error_text(exc)}",
                               adapter=self.name) from exc
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            self._counters["actuator_failures"] += 1
            raise AdapterError(f"{cmd.actuator}: {exc!r}", adapter=self.name) from exc
        self._counters["actuator_writes"] += 1
        now = self._clock.now()
        on = _is_on(addr, pv)
        log.info("BACnet: %s %s at priority %d -> present value %s", cmd.action.value,
                 cmd.actuator, addr.priority, pv)
        if self._bus is not None and on is not None:
            self._bus.publish(LoadFeedback(actuator=cmd.actuator, on=on, at=now))
        return LoadState(
            load=cmd.load, on=on if on is not None else cmd.action is not LoadAction.SHED,
            since=now, reason=cmd.reason, rule=cmd.rule, until=cmd.until,
            limit_w=cmd.limit_w if cmd.action is LoadAction.LIMIT else None,
            extra={"present_value": _plain(pv), "priority": addr.priority})

    def _command_value(self, cmd: LoadCommand, addr: ActuatorAddress) -> Any:
        if cmd.action is LoadAction.SHED:
            raw: bool | float | int | None = addr.shed
        elif cmd.action is LoadAction.RESTORE:
            raw = addr.restore
        else:
            if addr.kind != "analog" or cmd.limit_w is None:
                raise AdapterError(f"{cmd.actuator}: LIMIT needs an analog object and limit_w",
                                   adapter=self.name, retryable=False)
            raw = float(cmd.limit_w)
        if raw is None:
            return Null(())
        if addr.kind == "binary":
            return BinaryPV("active" if raw else "inactive")
        if addr.kind == "analog":
            return Real(float(raw))
        return Unsigned(int(raw))


def _is_on(addr: ActuatorAddress, pv: Any) -> bool | None:
    if isinstance(pv, ErrorRejectAbortNack) or pv is None:
        return None
    if addr.kind == "binary":
        return bool(pv == BinaryPV("active"))
    try:
        return float(pv) != float(addr.shed)
    except (TypeError, ValueError):
        return None


def _plain(pv: Any) -> Any:
    if isinstance(pv, BinaryPV):
        return str(pv)
    if isinstance(pv, (int, float)):
        return pv
    return str(pv)


def _error_text(resp: Any) -> str:
    for attr in ("errorCode", "reason", "apduAbortRejectReason"):
        v = getattr(resp, attr, None)
        if v is not None:
            return str(v)
    return type(resp).__name__
