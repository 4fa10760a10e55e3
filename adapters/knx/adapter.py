"""KNX adapter: meter values, price and DR level on group addresses; loads switched by DPT 1.001.

KNXnet/IP (KNX standard 03.08.xx) through xknx 4: tunnelling over UDP or TCP,
routing (multicast), and KNX IP Secure (secure TCP tunnelling, secure routing)
when an ETS keyring is configured.

Exposures: each ``[[adapter.knx.exposure]]`` is an xknx ``ExposeSensor`` on
its group address with its datapoint type.  A new value is sent (GroupValueWrite)
when it moved by more than the deadband from the last value sent; xknx's
``cooldown`` enforces the minimum interval (the newest value goes out when it
ends) and ``periodic_send`` the optional repetition.  GroupValueRead is answered
with the newest value, inside the deadband or not.  A GroupValueWrite or
GroupValueResponse from another device to an exposed address is ignored
(counted, logged once per address): the bus cannot change what the meter says.

Actuators: a ``LoadCommand`` for ``knx:<ga>[?status=<ga>]`` writes DPT 1.001 to
``<ga>`` through an xknx ``Switch``; ``apply`` returns once the telegram left
(the tunnel acknowledged it).  Telegrams on the status address (writes, and
the answer to the read xknx sends on connecting) are published as
``LoadFeedback``.  Only addresses that appeared in commands are ever written,
and never an exposed one.

Connection: one reconnect owner, this adapter.  xknx's own ``auto_reconnect``
(a fixed 3 s wait, and none at all for the first connection) is off; every
attempt uses a fresh ``XKNX`` instance, and after a loss (xknx's connection
state callback says DISCONNECTED) the next attempt waits for
``gateway.backoff.Backoff`` (full jitter, capped).  After each (re)connect the
current value of every exposure is sent again, since devices may have missed
changes.  Outgoing telegrams are paced by xknx's ``rate_limit``
(``rate_limit_per_s``, default 20/s as in Home Assistant's KNX integration).

Not supported: KNX as a price/DR signal input, dimming or LIMIT on a switch
(a LIMIT with a positive ``limit_w`` is refused: a DPT 1.001 switch cannot
limit power), gateway discovery.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from xknx import XKNX
from xknx.core.connection_state import XknxConnectionState
from xknx.devices import ExposeSensor, Switch
from xknx.dpt.payload import DPTBinary
from xknx.exceptions import ConversionError, InvalidSecureConfiguration, XKNXException
from xknx.io import ConnectionConfig, ConnectionType, SecureConfig
from xknx.secure.keyring import Keyring, load_keyring
from xknx.telegram import GroupAddress, Telegram, TelegramDirection
from xknx.telegram.apci import GroupValueRead, GroupValueResponse, GroupValueWrite

from adapters.base import AdapterContext, Health, stop_task
from adapters.knx.actuator import ActuatorAddress, parse_actuator_address
from adapters.knx.config import Datapoint, Exposure, KnxConfig, UnitMismatch, unit_factor
from gateway.backoff import Backoff
from gateway.bus import Bus, LoadFeedback, Subscription
from gateway.clock import Clock, RealClock
from gateway.errors import AdapterError
from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    LoadState,
    PriceSignal,
    Snapshot,
)
from gateway.quantities import normalised_value, quantities_for

log = logging.getLogger(__name__)

_STOP_S = 5.0  # bound on xknx's stop (DISCONNECT_REQUEST and the queue drain)
_DR_RECHECK_MAX_S = 3600.0


class ConnectionState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing off"
    KEYRING_REFUSED = "keyring refused"
    STOPPED = "stopped"


class _ReadOnlyExpose(ExposeSensor):
    """An ``ExposeSensor`` that never adopts a value another device writes.

    xknx's ExposeSensor takes incoming GroupValueWrite/Response to its address
    as its new value (and would then answer reads with it).  Here only our own
    outgoing telegrams count; the adapter logs the refused ones.
    """

    def process_group_write(self, telegram: Any) -> None:
        if telegram.direction is TelegramDirection.INCOMING:
            return
        super().process_group_write(telegram)


@dataclass(slots=True)
class _Exposed:
    spec: Exposure
    dp: Datapoint
    address: GroupAddress
    value: float | None = None  # newest value, in the datapoint's unit
    sent: float | None = None  # the value last written to the bus (decoded)
    sensor: _ReadOnlyExpose | None = None
    warned: set[str] = field(default_factory=set)  # problems logged once


class KnxAdapter:
    """The ``knx`` adapter: see the module docstring.

    ``await start(bus)`` spawns the task running :meth:`run` and returns;
    ``await stop()`` disconnects and ends it.
    """

    name = "knx"

    def __init__(
        self,
        *,
        gateway_id: str,
        config: KnxConfig,
        meters: Iterable[str] = (),
        secrets: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self._meters = tuple(meters)
        self._secrets = dict(secrets or {})
        self._clock: Clock = clock or RealClock()
        self._exposed = [
            _Exposed(spec=e, dp=e.datapoint, address=e.address) for e in config.exposure
        ]
        self._by_address = {ex.address: ex for ex in self._exposed}
        self._meter_exposed = [ex for ex in self._exposed if ex.spec.value not in _SIGNALS]
        self._actuators: dict[str, ActuatorAddress] = {}  # commanded so far, by actuator string
        self._switches: dict[str, Switch] = {}  # of the current connection
        self._pending: dict[GroupAddress, list[asyncio.Future[None]]] = {}
        self._refused_logged: set[GroupAddress] = set()
        self._xknx: XKNX | None = None
        self._keyring: Keyring | None = None
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._dr_wake = asyncio.Event()
        self._state = ConnectionState.IDLE
        self._detail = "not started"
        self._failing = False  # inside a burst of failed connection attempts
        self._counters: dict[str, int] = {
            "connects": 0,
            "connect_failures": 0,
            "disconnects": 0,
            "sent": 0,
            "responses": 0,
            "reads": 0,
            "suppressed": 0,
            "refused_writes": 0,
            "commands": 0,
            "commands_failed": 0,
            "feedback": 0,
            "conversion_errors": 0,
        }

    @classmethod
    def from_context(cls, context: AdapterContext, *, clock: Clock | None = None) -> KnxAdapter:
        """Build from the supervisor's context (``context.config`` is validated here).

        Raises:
            pydantic.ValidationError: the config section is invalid.
        """
        raw = context.config
        config = raw if isinstance(raw, KnxConfig) else KnxConfig.model_validate(dict(raw))
        return cls(
            gateway_id=context.gateway_id,
            config=config,
            meters=context.meters,
            secrets=context.secrets,
            clock=clock,
        )

    # ------------------------------------------------------------ lifecycle
    async def start(self, bus: Bus) -> None:
        """Spawn the adapter's task; returns at once (connecting is the task's job)."""
        if self._task is not None and not self._task.done():
            return
        self._stop.clear()
        self._task = asyncio.create_task(self.run(bus), name=f"adapter:knx:{self.gateway_id}")

    async def stop(self) -> None:
        """Disconnect and end the task started by ``start``."""
        self._stop.set()
        task, self._task = self._task, None
        await stop_task(task, grace_s=_STOP_S * 2, what="KNX adapter")

    async def run(self, bus: Bus) -> None:
        """Connect, expose and reconnect until ``stop()`` or cancellation."""
        self._bus = bus
        sub: Subscription[Snapshot | PriceSignal | DemandResponseEvent] = bus.subscribe(
            Snapshot, PriceSignal, DemandResponseEvent, maxsize=1000
        )
        # values known before we started (late start, restart after a crash)
        for snap in bus.last_snapshot.values():
            self._on_snapshot(snap)
        if bus.last_price is not None:
            self._on_price(bus.last_price)
        try:
            async with asyncio.TaskGroup() as tg:
                events = tg.create_task(self._events(sub), name="adapter:knx:events")
                dr = tg.create_task(self._dr_loop(), name="adapter:knx:dr")
                try:
                    await self._connection_loop()
                finally:
                    events.cancel()
                    dr.cancel()
        finally:
            sub.close()
            self._state = ConnectionState.STOPPED
            self._detail = "stopped"

    def health(self) -> Health:
        counters = dict(self._counters)
        xknx = self._xknx
        if xknx is not None:
            cm = xknx.connection_manager
            counters["cemi_in"] = cm.cemi_count_incoming
            counters["cemi_out"] = cm.cemi_count_outgoing
            counters["cemi_out_errors"] = cm.cemi_count_outgoing_error
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            return Health(ok=False, detail=f"crashed: {task.exception()!r}", counters=counters,
                          crashed=True)
        return Health(ok=self._state is ConnectionState.CONNECTED, detail=self._detail,
                      counters=counters)

    @property
    def state(self) -> ConnectionState:
        return self._state

    # ------------------------------------------------------------ connection
    async def _connection_loop(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while not self._stop.is_set():
            self._state = ConnectionState.CONNECTING
            self._detail = f"connecting ({self.config.peer})"
            xknx = await self._connect(backoff)
            if xknx is None:
                self._state = (ConnectionState.KEYRING_REFUSED
                               if self._state is ConnectionState.KEYRING_REFUSED
                               else ConnectionState.BACKING_OFF)
                await self._sleep_unless_stopped(backoff.next_delay())
                continue
            backoff.reset()
            try:
                await self._serve(xknx)
            finally:
                await self._teardown(xknx)
            if not self._stop.is_set():
                self._counters["disconnects"] += 1
                log.warning("KNX %s: connection lost; reconnecting", self.config.peer)
                self._state = ConnectionState.BACKING_OFF
                self._detail = f"connection lost ({self.config.peer})"
                await self._sleep_unless_stopped(backoff.next_delay())

    async def _connect(self, backoff: Backoff) -> XKNX | None:
        try:
            secure = await self._secure_config()
        except (InvalidSecureConfiguration, OSError) as exc:
            # Never the password: xknx's message says "invalid password or malformed file".
            why = f"keyring {self.config.keyring}: {exc or type(exc).__name__}"
            self._connect_failed(why)
            self._state = ConnectionState.KEYRING_REFUSED
            backoff.jump_to_cap()
            return None
        self._lost.clear()
        xknx = XKNX(
            connection_config=self._connection_config(secure),
            rate_limit=self.config.rate_limit_per_s,
            multicast_group=self.config.multicast_group,
            multicast_port=self.config.multicast_port,
            connection_state_changed_cb=self._on_connection_state,
        )
        xknx.telegram_queue.register_telegram_received_cb(self._on_telegram, match_for_outgoing=True)
        # stop() must not wait for a connection attempt (up to connect_timeout_s)
        starting = asyncio.ensure_future(xknx.start())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({starting, stopping}, timeout=self.config.connect_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            starting.cancel()
            raise
        finally:
            stopping.cancel()
        failure: BaseException | None
        if starting in done:
            failure = starting.exception()
        else:
            starting.cancel()
            await asyncio.wait({starting})
            failure = None if self._stop.is_set() else TimeoutError("no answer in time")
        if starting in done and failure is None:
            return xknx
        if failure is not None and not isinstance(failure, XKNXException | OSError | TimeoutError):
            await self._teardown(xknx)
            raise failure
        if failure is not None:
            self._connect_failed(str(failure) or type(failure).__name__)
            if isinstance(failure, InvalidSecureConfiguration):
                backoff.jump_to_cap()
        await self._teardown(xknx)
        return None

    async def _secure_config(self) -> SecureConfig | None:
        """The keyring, loaded (and its signature checked) once; None without one.

        Raises:
            InvalidSecureConfiguration: wrong password or damaged file.
            OSError: the keyring or password file cannot be read.
        """
        if self.config.keyring is None:
            return None
        if self._keyring is None:
            password = self.config.resolve_keyring_password(self._secrets)
            if password is None:
                raise InvalidSecureConfiguration(
                    "no keyring password (keyring_password, keyring_password_file or the secrets file)"
                )
            if not self.config.keyring.is_file():
                raise FileNotFoundError(f"no such file: {self.config.keyring}")
            self._keyring = await load_keyring(self.config.keyring, password)
        return SecureConfig(keyring=self._keyring)

    def _connection_config(self, secure: SecureConfig | None) -> ConnectionConfig:
        cfg = self.config
        if cfg.connection == "routing":
            kind = ConnectionType.ROUTING_SECURE if secure else ConnectionType.ROUTING
        elif cfg.connection == "tunnelling_tcp":
            kind = ConnectionType.TUNNELING_TCP_SECURE if secure else ConnectionType.TUNNELING_TCP
        else:
            kind = ConnectionType.TUNNELING
        return ConnectionConfig(
            connection_type=kind,
            individual_address=cfg.individual_address,
            local_ip=cfg.local_ip,
            gateway_ip=cfg.gateway_host,
            gateway_port=cfg.gateway_port,
            multicast_group=cfg.multicast_group,
            multicast_port=cfg.multicast_port,
            auto_reconnect=False,  # we own reconnecting (module docstring)
            secure_config=secure,
        )

    def _connect_failed(self, why: str) -> None:
        self._counters["connect_failures"] += 1
        self._detail = f"cannot connect ({self.config.peer}): {why}"
        (log.debug if self._failing else log.warning)(
            "KNX %s: cannot connect: %s", self.config.peer, why)
        self._failing = True

    def _on_connection_state(self, state: XknxConnectionState) -> None:
        if state is XknxConnectionState.DISCONNECTED and self._state is ConnectionState.CONNECTED:
            self._lost.set()

    async def _serve(self, xknx: XKNX) -> None:
        self._xknx = xknx
        self._state = ConnectionState.CONNECTED
        self._counters["connects"] += 1
        self._failing = False
        secure = " (KNX IP Secure)" if self.config.secure else ""
        self._detail = f"connected ({self.config.peer}{secure}) as {xknx.current_address}"
        log.info("KNX %s: connected%s as %s", self.config.peer, secure, xknx.current_address)
        for ex in self._exposed:
            ex.sensor = _ReadOnlyExpose(
                xknx,
                name=f"{ex.spec.value}@{ex.address}",
                group_address=ex.address,
                value_type=ex.dp.transcoder,
                respond_to_read=ex.spec.respond_to_read,
                cooldown=ex.spec.min_interval_s,
                periodic_send=ex.spec.periodic_s,
            )
            xknx.devices.async_add(ex.sensor)
            ex.sent = None
            await self._push(ex)
        for text, addr in self._actuators.items():
            self._switch(xknx, text, addr)
        stop = asyncio.create_task(self._stop.wait())
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()

    async def _teardown(self, xknx: XKNX) -> None:
        if self._xknx is xknx:
            self._xknx = None
            self._switches.clear()
            for ex in self._exposed:
                ex.sensor = None
            for futures in self._pending.values():
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(AdapterError("KNX connection closed", adapter="knx"))
            self._pending.clear()
        try:
            async with asyncio.timeout(_STOP_S):
                await xknx.stop()
        except (XKNXException, OSError, TimeoutError) as exc:
            log.debug("KNX: stopping xknx: %r", exc)

    async def _sleep_unless_stopped(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    # ------------------------------------------------------------ telegrams
    def _on_telegram(self, telegram: Telegram) -> None:
        dest = telegram.destination_address
        if not isinstance(dest, GroupAddress):
            return
        payload = telegram.payload
        if telegram.direction is TelegramDirection.OUTGOING:
            if isinstance(payload, GroupValueWrite):
                self._counters["sent"] += 1
                ex = self._by_address.get(dest)
                if ex is not None and ex.sensor is not None:
                    value = ex.sensor.sensor_value.value
                    ex.sent = float(value) if isinstance(value, int | float) else None
                for fut in self._pending.pop(dest, ()):
                    if not fut.done():
                        fut.set_result(None)
            elif isinstance(payload, GroupValueResponse):
                self._counters["responses"] += 1
            return
        if isinstance(payload, GroupValueRead):
            if dest in self._by_address:
                self._counters["reads"] += 1
            return
        if not isinstance(payload, GroupValueWrite | GroupValueResponse):
            return
        if dest in self._by_address:
            if isinstance(payload, GroupValueWrite):
                self._counters["refused_writes"] += 1
                if dest not in self._refused_logged:
                    self._refused_logged.add(dest)
                    log.warning(
                        "KNX: %s wrote to %s, which this gateway exposes (%s): ignored "
                        "(logged once per address)", telegram.source_address, dest,
                        self._by_address[dest].spec.value)
            return
        self._feedback(dest, payload)

    def _feedback(self, dest: GroupAddress, payload: GroupValueWrite | GroupValueResponse) -> None:
        targets = [t for t, a in self._actuators.items() if a.status == dest]
        if not targets or self._bus is None:
            return
        value = payload.value
        if not isinstance(value, DPTBinary):
            log.warning("KNX: status %s sent %s, not DPT 1.001: ignored", dest, value)
            return
        now = self._clock.now()
        for text in targets:
            self._counters["feedback"] += 1
            self._bus.publish(LoadFeedback(actuator=text, on=bool(value.value), at=now))

    # ------------------------------------------------------------ values
    async def _events(self, sub: Subscription[Snapshot | PriceSignal | DemandResponseEvent]) -> None:
        while True:
            item = await sub.get()
            if isinstance(item, Snapshot):
                changed = self._on_snapshot(item)
            elif isinstance(item, PriceSignal):
                changed = self._on_price(item)
            else:
                self._dr_wake.set()
                continue
            for ex in changed:
                await self._push(ex)

    def _on_snapshot(self, snap: Snapshot) -> list[_Exposed]:
        wanted = [ex for ex in self._meter_exposed if ex.spec.meter in (None, snap.meter)]
        if not wanted:
            return []
        values = {q.key: (r, q) for r, q in quantities_for(snap)}
        changed: list[_Exposed] = []
        for ex in wanted:
            found = values.get(ex.spec.value)
            if found is None:
                continue
            reading, quantity = found
            raw = normalised_value(reading, quantity)
            if isinstance(raw, str):
                try:
                    raw = int(raw.strip(), 10)  # DSMR tariff indicator "0002"
                except ValueError:
                    self._warn_once(ex, "text", "KNX: %s is not a number (%r): not sent",
                                    ex.spec.value, raw)
                    continue
            try:
                factor = unit_factor(quantity.unit, ex.dp.unit)
            except UnitMismatch as exc:
                self._warn_once(ex, "unit", "KNX: %s on %s: %s", ex.spec.value, ex.address, exc)
                continue
            if self._set_value(ex, float(raw) * factor):
                changed.append(ex)
        return changed

    def _on_price(self, price: PriceSignal) -> list[_Exposed]:
        changed: list[_Exposed] = []
        for ex in self._exposed:
            if ex.spec.value == "price":
                value: float | None = price.price_per_kwh
            elif ex.spec.value == "price_tier":
                value = None if price.tier is None else float(price.tier)
            else:
                continue
            if value is not None and self._set_value(ex, value):
                changed.append(ex)
        return changed

    def _dr_level(self, now: datetime) -> tuple[int, float]:
        """(highest level in force, seconds until the next start or end)."""
        bus = self._bus
        events = list(bus.dr_events.values()) if bus is not None else []
        level = 0
        wait = _DR_RECHECK_MAX_S
        for ev in events:
            if ev.cancelled:
                continue
            try:
                if ev.start <= now < ev.end:
                    level = max(level, ev.level)
                for edge in (ev.start, ev.end):
                    dt = (edge - now).total_seconds()
                    if dt > 0:
                        wait = min(wait, dt)
            except TypeError:  # a naive datetime from a signal source: not comparable
                log.warning("KNX: DR event %s has times without a timezone: ignored", ev.event_id)
        return level, wait

    async def _dr_loop(self) -> None:
        targets = [ex for ex in self._exposed if ex.spec.value == "dr_level"]
        if not targets:
            return
        while True:
            self._dr_wake.clear()
            level, wait = self._dr_level(self._clock.now())
            for ex in targets:
                if self._set_value(ex, float(level)):
                    await self._push(ex)
            try:
                async with asyncio.timeout(wait):
                    await self._dr_wake.wait()
            except TimeoutError:
                pass

    def _set_value(self, ex: _Exposed, value: float) -> bool:
        if not math.isfinite(value):
            return False
        ex.value = value
        return True

    async def _push(self, ex: _Exposed) -> None:
        """Send ``ex.value`` unless inside the deadband (then only answer reads with it)."""
        sensor = ex.sensor
        value = ex.value
        if sensor is None or value is None:
            return
        try:
            if ex.sent is not None and abs(value - ex.sent) <= ex.spec.deadband:
                self._counters["suppressed"] += 1
                sensor.initialize_value(value)
                return
            await sensor.set(value, skip_unchanged=True)
        except ConversionError as exc:
            self._counters["conversion_errors"] += 1
            self._warn_once(ex, "range", "KNX: %s = %s does not fit DPT %s on %s: %s",
                            ex.spec.value, value, ex.spec.dpt, ex.address, exc)

    def _warn_once(self, ex: _Exposed, kind: str, msg: str, *args: object) -> None:
        if kind in ex.warned:
            log.debug(msg, *args)
            return
        ex.warned.add(kind)
        log.warning(msg, *args)

    # ------------------------------------------------------------ actuator
    def _switch(self, xknx: XKNX, text: str, addr: ActuatorAddress) -> Switch:
        switch = self._switches.get(text)
        if switch is None:
            switch = Switch(
                xknx,
                name=f"load {text}",
                group_address=addr.switch,
                group_address_state=addr.status,
                respond_to_read=False,
                sync_state=addr.status is not None,  # read the status once connected
            )
            xknx.devices.async_add(switch)
            self._switches[text] = switch
        return switch

    async def apply(self, cmd: LoadCommand) -> LoadState:
        """Switch the load's group address; returns once the telegram left.

        Raises:
            AdapterError: not a valid ``knx:`` actuator or one that collides with an
                exposure, LIMIT above 0 W (retryable False); not connected, or the
                telegram was not sent in time (retryable True).
        """
        text = cmd.actuator
        if not text.startswith("knx:"):
            raise AdapterError(f"load {cmd.load}: {text!r} is not a knx: actuator",
                               adapter="knx", retryable=False)
        try:
            addr = parse_actuator_address(text[4:])
        except ValueError as exc:
            raise AdapterError(f"load {cmd.load}: {text!r}: {exc}", adapter="knx",
                               retryable=False) from exc
        clash = {addr.switch, addr.status} & set(self._by_address)
        if clash:
            raise AdapterError(
                f"load {cmd.load}: {', '.join(map(str, clash))} is an exposed address; not written",
                adapter="knx", retryable=False)
        if cmd.action is LoadAction.LIMIT and (cmd.limit_w is None or cmd.limit_w > 0):
            raise AdapterError(f"load {cmd.load}: a DPT 1.001 switch cannot limit power",
                               adapter="knx", retryable=False)
        on = cmd.action is LoadAction.RESTORE
        self._actuators[text] = addr
        xknx = self._xknx
        if xknx is None or self._state is not ConnectionState.CONNECTED:
            self._counters["commands_failed"] += 1
            raise AdapterError(f"load {cmd.load}: not connected to KNX ({self._detail})",
                               adapter="knx")
        switch = self._switch(xknx, text, addr)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(addr.switch, []).append(fut)
        try:
            await (switch.set_on() if on else switch.set_off())
            async with asyncio.timeout(self.config.connect_timeout_s):
                await fut
        except (TimeoutError, AdapterError) as exc:
            self._counters["commands_failed"] += 1
            raise AdapterError(f"load {cmd.load}: {addr.switch} not written: {exc or 'timeout'}",
                               adapter="knx") from exc
        finally:
            waiting = self._pending.get(addr.switch)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
        self._counters["commands"] += 1
        log.info("KNX: load %s %s via %s (%s)", cmd.load, "on" if on else "off", addr.switch,
                 cmd.reason)
        return LoadState(
            load=cmd.load,
            on=on,
            since=self._clock.now(),
            reason=cmd.reason,
            rule=cmd.rule,
            until=None if on else cmd.until,
            extra={"actuator": text, "confirmed": False},
        )


_SIGNALS = frozenset({"price", "price_tier", "dr_level"})
