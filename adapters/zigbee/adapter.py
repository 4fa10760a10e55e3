"""The ZigBee adapter: coordinator, Energy Service Interface and on/off actuator.

Lifecycle: ``start`` spawns one task that opens the radio through the
configured zigpy radio library (bellows/EZSP by default), forms or restores
the network (zigpy's database keeps devices and network backups), and then
serves the bus: snapshots feed the Metering server, every ``PriceSignal`` is
pushed as PublishPrice, every ``DemandResponseEvent`` as LoadControlEvent (or
CancelLoadControlEvent).  Losing the radio restarts the application with
backoff; the meters and other adapters never notice.

ZCL frames that devices send to the coordinator's ESI endpoints for Metering,
Price, DRLC or Time are answered by :class:`~adapters.zigbee.esi.EsiServer`
before zigpy's own device pipeline sees them (zigpy would hand them to the
*device's* client cluster objects and answer only what it knows, from the
wrong endpoint).  Every other frame goes to zigpy; Smart Energy profile
(0x0109) frames are relabelled 0x0104 first because zigpy 2.4 drops ZCL on
any profile but HA/ZLL ("custom profile ... ignoring") although the ZCL
encoding is identical (ZIGBEE_SE.md §5).

Actuator addresses: ``zigbee:<ieee>/<endpoint>`` (IEEE with or without
colons), optionally ``?rated_w=<W>`` to allow LIMIT through Level Control
(level = limit / rated power).  Only addresses named in commands are written.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import zigpy.exceptions
import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import LevelControl, OnOff

from adapters.base import AdapterContext, Health
from adapters.zigbee.address import ActuatorAddress, parse_actuator
from adapters.zigbee.config import DATABASE_NAME, HA_PROFILE, SE_PROFILE, ZigbeeConfig, radio_class, zigpy_config
from adapters.zigbee.esi import DRLC, PRICE, SERVED_CLUSTERS, EsiServer, Frame
from adapters.zigbee.events import DrlcEventStatus, PriceAck
from gateway.backoff import Backoff
from gateway.bus import Bus, DrEventReport, LoadFeedback, MeterStatus, Subscription
from gateway.clock import Clock, RealClock
from gateway.errors import AdapterError
from gateway.model import DemandResponseEvent, LoadAction, LoadCommand, LoadState, PriceSignal, Snapshot

__all__ = ["EsiApplicationMixin", "ZigbeeAdapter", "esi_application_class"]

log = logging.getLogger(__name__)

ADAPTER: Final = "zigbee"
_ZCL_DIRECTION_S2C: Final = 0x08  # frame control bit 3
_ZCL_MANUF: Final = 0x04


# General ZCL commands that are requests (the rest are responses or reports, which
# belong to whoever asked: zigpy matches them to its own pending requests).
_GENERAL_REQUESTS: Final = frozenset({0x00, 0x02, 0x03, 0x05, 0x06, 0x08, 0x0C, 0x11, 0x13, 0x15})


def _is_esi_request(data: bytes) -> bool:
    """A client -> server request: a cluster command, or a general command that asks something."""
    if len(data) < 3 or data[0] & _ZCL_DIRECTION_S2C:
        return False
    if data[0] & 0x03 == 0x01:
        return True
    offset = 4 if data[0] & _ZCL_MANUF else 2  # frame control, [manufacturer code], TSN, command
    return len(data) > offset and data[offset] in _GENERAL_REQUESTS


class EsiApplicationMixin:
    """Put in front of a radio library's ControllerApplication (see :func:`esi_application_class`)."""

    esi_endpoints: frozenset[int] = frozenset()
    esi_handler: Callable[[Any], bool] | None = None

    def packet_received(self, packet: Any) -> None:
        handler = self.esi_handler
        if (
            handler is not None
            and packet.dst_ep in self.esi_endpoints
            and packet.cluster_id in SERVED_CLUSTERS
            and packet.profile_id in (SE_PROFILE, HA_PROFILE)
            and _is_esi_request(packet.data.serialize())
        ):
            try:
                if handler(packet):
                    return
            except Exception:  # noqa: BLE001 - a bug here must not break the radio library's receive path
                log.exception("ESI request handling failed for %r", packet)
                return
        if packet.profile_id == SE_PROFILE:
            packet = packet.replace(profile_id=HA_PROFILE)
        super().packet_received(packet)  # type: ignore[misc]


def esi_application_class(radio_cls: type[Any]) -> type[Any]:
    """``radio_cls`` with the ESI packet hook in front of it."""
    return type(f"Esi{radio_cls.__name__}", (EsiApplicationMixin, radio_cls), {})


class _AppListener:
    """zigpy listener_event receiver (device joins/leaves, lost radio)."""

    def __init__(self, adapter: ZigbeeAdapter) -> None:
        self._adapter = adapter

    def device_initialized(self, device: Any) -> None:
        self._adapter._on_device_initialized(device)

    def device_left(self, device: Any) -> None:
        log.info("ZigBee device %s left", device.ieee)

    def connection_lost(self, exc: Exception) -> None:
        self._adapter._on_connection_lost(exc)


class ZigbeeAdapter:
    name = ADAPTER

    def __init__(
        self,
        *,
        config: ZigbeeConfig,
        gateway_id: str,
        meters: tuple[str, ...] = (),
        app_class: type[Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.clock = clock or RealClock()
        self._radio_cls = app_class
        self.esi = EsiServer(config, meter=config.meter or (meters[0] if meters else None))
        self.app: Any = None
        self.ready = asyncio.Event()
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._detail = "not started"
        self._price_clients: set[tuple[t.EUI64, int, int]] = set()
        self._drlc_clients: set[tuple[t.EUI64, int, int]] = set()
        self._watched: dict[tuple[str, int], str] = {}  # (ieee, ep) -> actuator string
        self._confirmed: dict[str, asyncio.Event] = {}
        self.statuses: list[DrlcEventStatus] = []
        self.price_acks: list[PriceAck] = []
        self.counters: dict[str, int] = {
            "starts": 0, "start_failures": 0, "requests": 0, "frames_sent": 0, "send_failures": 0,
            "prices_pushed": 0, "dr_events_pushed": 0, "event_status": 0, "commands": 0, "feedback": 0,
        }

    @classmethod
    def from_context(cls, context: AdapterContext) -> ZigbeeAdapter:
        raw = context.config
        config = raw if isinstance(raw, ZigbeeConfig) else ZigbeeConfig.model_validate(dict(raw))
        data_dir = getattr(context, "data_dir", None)
        if config.database is None and data_dir is not None:
            # the network must survive restarts: zigpy's database next to the gateway's store
            config = config.model_copy(update={"database": Path(data_dir) / DATABASE_NAME})
        return cls(config=config, gateway_id=context.gateway_id, meters=context.meters)

    # ------------------------------------------------------------ lifecycle
    async def start(self, bus: Bus) -> None:
        """Spawn the adapter task; returns at once (opening the radio is the task's job)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self.run(bus), name=f"adapter:zigbee:{self.gateway_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for pending in list(self._tasks):
            pending.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> Health:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            return Health(ok=False, detail=f"crashed: {task.exception()!r}",
                          counters=dict(self.counters), crashed=True)
        return Health(ok=self.app is not None and self.ready.is_set(), detail=self._detail,
                      counters=dict(self.counters))

    async def run(self, bus: Bus) -> None:
        """Open the radio, serve, and reopen it with backoff until cancelled."""
        self._bus = bus
        sub: Subscription[Any] = bus.subscribe(Snapshot, MeterStatus, PriceSignal, DemandResponseEvent)
        now = self.clock.now()
        for snap in bus.last_snapshot.values():
            self.esi.set_snapshot(snap)
        if bus.last_price is not None:
            self.esi.set_price(bus.last_price, now)
        for event in bus.dr_events.values():
            self.esi.set_dr_event(event)
        backoff = Backoff(1.0, 60.0)
        try:
            while True:
                try:
                    self.app = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any radio library failure: retry
                    self.counters["start_failures"] += 1
                    self._detail = f"radio not available: {exc!r}"
                    if backoff.attempts == 0:
                        log.error("ZigBee radio %s on %s failed to start: %r; retrying",
                                  self.config.radio, self.config.device, exc)
                    await self.clock.sleep(backoff.next_delay())
                    continue
                backoff.reset()
                self._detail = "running"
                self.ready.set()
                try:
                    await self._serve(sub)
                finally:
                    self.ready.clear()
                    app, self.app = self.app, None
                    await _quietly(app.shutdown())
                log.warning("ZigBee radio connection lost; restarting the network")
                self._detail = "radio connection lost"
                await self.clock.sleep(backoff.next_delay())
        finally:
            sub.close()
            self._detail = "stopped"

    async def _open(self) -> Any:
        base = self._radio_cls or radio_class(self.config.radio)
        cls = esi_application_class(base)
        self._lost.clear()
        # Load the database first, then start the radio ourselves: a start-up that is
        # cancelled or fails still closes the port and the database.
        app = await cls.new(config=zigpy_config(self.config), start_radio=False)
        # endpoint 1 too: devices that bind to "the coordinator" use zigpy's default endpoint
        app.esi_endpoints = frozenset({self.config.se_endpoint, self.config.ha_endpoint, 1})
        app.esi_handler = self._on_esi_packet
        app.add_listener(_AppListener(self))
        try:
            await app.startup(auto_form=True)
        except BaseException:
            await _quietly(app.shutdown())
            raise
        self.counters["starts"] += 1
        log.info("ZigBee network up: radio %s, %d known device(s)", self.config.radio, len(app.devices))
        for device in list(app.devices.values()):
            self._learn_clients(device)
        return app

    async def _serve(self, sub: Subscription[Any]) -> None:
        lost = asyncio.create_task(self._lost.wait())
        get: asyncio.Task[Any] | None = None
        try:
            while True:
                get = asyncio.create_task(sub.get())
                done, _ = await asyncio.wait({get, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    return
                item = get.result()
                try:
                    await self._on_bus(item)
                except Exception:  # noqa: BLE001 - one bad message must not end the adapter
                    log.exception("ZigBee adapter failed to handle %s", type(item).__name__)
        finally:
            for task in (lost, get):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    def _on_connection_lost(self, exc: Exception) -> None:
        log.warning("ZigBee radio reported connection lost: %r", exc)
        self._lost.set()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ bus side
    async def _on_bus(self, item: Any) -> None:
        now = self.clock.now()
        if isinstance(item, Snapshot):
            self.esi.set_snapshot(item)
            for (ieee, ep, profile), frame in self.esi.due_reports(now):
                await self._send(t.EUI64.convert(ieee), ep, profile, frame)
        elif isinstance(item, MeterStatus):
            if self.esi.meter in (None, item.meter):
                self.esi.meter_online = item.online
        elif isinstance(item, PriceSignal):
            self.esi.set_price(item, now)
            await self._push_price(now)
        elif isinstance(item, DemandResponseEvent):
            await self._push_dr_event(item, now)

    async def _push_price(self, now: datetime) -> None:
        for ieee, ep, profile in sorted(self._price_clients):
            frame = self.esi.publish_price(self.esi.next_tsn(), now)
            if frame is not None and await self._send(ieee, ep, profile, frame):
                self.counters["prices_pushed"] += 1

    async def _push_dr_event(self, event: DemandResponseEvent, now: datetime) -> None:
        self.esi.set_dr_event(event)
        for ieee, ep, profile in sorted(self._drlc_clients):
            if event.cancelled:
                frame: Frame | None = self.esi.cancel_load_control_event(event, self.esi.next_tsn())
            else:
                await self._write_randomisation(ieee, ep, event)
                frame = self.esi.load_control_event(event, self.esi.next_tsn(), now)
            if frame is not None and await self._send(ieee, ep, profile, frame):
                self.counters["dr_events_pushed"] += 1
                log.info("DR event %s %s to %s/%d", event.event_id,
                         "cancelled" if event.cancelled else "sent", ieee, ep)

    async def _write_randomisation(self, ieee: t.EUI64, ep: int, event: DemandResponseEvent) -> None:
        """Set the client's Start/DurationRandomizationMinutes (SE: randomisation is a client attribute)."""
        if event.randomize_start_s <= 0 and event.randomize_end_s <= 0:
            return
        try:
            cluster = self.app.get_device(ieee=ieee).endpoints[ep].out_clusters[DRLC]
        except KeyError:
            return
        values = {
            "start_randomization_minutes": min(60, math.ceil(event.randomize_start_s / 60)),
            "duration_randomization_minutes": min(60, math.ceil(event.randomize_end_s / 60)),
        }
        try:
            async with asyncio.timeout(self.config.command_timeout_s):
                await cluster.write_attributes(values)
        except (TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            log.info("could not set DRLC randomisation on %s/%d: %r", ieee, ep, exc)

    async def _send(self, ieee: t.EUI64, ep: int, profile: int, frame: Frame) -> bool:
        """Send one frame from the ESI endpoint of ``profile`` to a device; False on failure."""
        app = self.app
        if app is None:
            return False
        try:
            device = app.get_device(ieee=ieee)
        except KeyError:
            return False
        src_ep = self.config.se_endpoint if profile == SE_PROFILE else self.config.ha_endpoint
        try:
            await device.request(profile=profile, cluster=frame.cluster, src_ep=src_ep, dst_ep=ep,
                                 sequence=frame.tsn, data=frame.data, expect_reply=False)
        except (zigpy.exceptions.ZigbeeException, TimeoutError, OSError) as exc:
            self.counters["send_failures"] += 1
            log.info("ZigBee send to %s/%d failed: %r", ieee, ep, exc)
            return False
        self.counters["frames_sent"] += 1
        return True

    # ------------------------------------------------------- network side
    def _learn_clients(self, device: Any) -> None:
        """Remember the endpoints that are Price or DRLC clients (they get pushes)."""
        for ep_id, ep in getattr(device, "endpoints", {}).items():
            if ep_id == 0 or not hasattr(ep, "out_clusters"):
                continue
            profile = SE_PROFILE if ep.profile_id == SE_PROFILE else HA_PROFILE
            if PRICE in ep.out_clusters:
                self._price_clients.add((device.ieee, ep_id, profile))
            if DRLC in ep.out_clusters:
                self._drlc_clients.add((device.ieee, ep_id, profile))

    def _on_device_initialized(self, device: Any) -> None:
        log.info("ZigBee device %s initialized (%s %s)", device.ieee, device.manufacturer, device.model)
        prices, events = set(self._price_clients), set(self._drlc_clients)
        self._learn_clients(device)
        now = self.clock.now()
        # a display that joins gets the current price and the active DR events at once
        for ieee, ep, profile in self._price_clients - prices:
            frame = self.esi.publish_price(self.esi.next_tsn(), now) if self.esi.price_is_current(now) else None
            if frame is not None:
                self._spawn(self._send(ieee, ep, profile, frame), f"zigbee:price:{ieee}")
        for ieee, ep, profile in self._drlc_clients - events:
            for event in list(self.esi.dr_events.values()):
                lce = self.esi.load_control_event(event, self.esi.next_tsn(), now)
                if lce is not None:
                    self._spawn(self._send(ieee, ep, profile, lce), f"zigbee:drlc:{ieee}")

    def _on_esi_packet(self, packet: Any) -> bool:
        """A client -> server frame for a served cluster on an ESI endpoint; False: let zigpy have it.

        Frames from devices zigpy does not know (yet) go to zigpy, which asks for
        their IEEE address; the device's next request is then answered.
        """
        app = self.app
        if app is None:
            return False
        try:
            device = app.get_device_with_address(packet.src)
        except KeyError:
            log.info("ESI request from unknown device %r: left to zigpy's discovery", packet.src)
            return False
        self.counters["requests"] += 1
        now = self.clock.now()
        data = packet.data.serialize()
        profile = int(packet.profile_id)
        if packet.timestamp is not None:
            device.last_seen = packet.timestamp
        key = (device.ieee, int(packet.src_ep), profile)
        if packet.cluster_id == PRICE:
            self._price_clients.add(key)
        elif packet.cluster_id == DRLC:
            self._drlc_clients.add(key)
        frames, reports = self.esi.handle_request(
            device=str(device.ieee), endpoint=int(packet.src_ep), profile=profile,
            cluster=int(packet.cluster_id), data=data, now=now)
        for report in reports:
            if isinstance(report, DrlcEventStatus):
                self.counters["event_status"] += 1
                self.statuses.append(report)
                del self.statuses[:-100]
                log.info("DR event %s (issuer id %d): %s reports %s", report.event_id, report.issuer_event_id,
                         report.device, report.status_name)
                if self._bus is not None:
                    self._bus.publish(report)
                    self._bus.publish(DrEventReport(
                        event_id=report.event_id or "", device=report.device,
                        status=report.status_name, at=report.status_time, source="zigbee",
                        detail=report.to_json()))
            else:
                self.price_acks.append(report)
                del self.price_acks[:-100]
                log.info("price %d acknowledged by %s", report.issuer_event_id, report.device)
        if frames:
            self._spawn(self._reply(device.ieee, int(packet.src_ep), int(packet.dst_ep), profile, frames),
                        f"zigbee:reply:{device.ieee}")
        return True

    async def _reply(self, ieee: t.EUI64, dst_ep: int, src_ep: int, profile: int, frames: list[Frame]) -> None:
        app = self.app
        if app is None:
            return
        device = app.get_device(ieee=ieee)
        for frame in frames:
            try:
                await device.request(profile=profile, cluster=frame.cluster, src_ep=src_ep, dst_ep=dst_ep,
                                     sequence=frame.tsn, data=frame.data, expect_reply=False)
                self.counters["frames_sent"] += 1
            except (zigpy.exceptions.ZigbeeException, TimeoutError, OSError) as exc:
                self.counters["send_failures"] += 1
                log.info("ZigBee reply to %s/%d failed: %r", ieee, dst_ep, exc)

    # ----------------------------------------------------------- actuator
    async def apply(self, cmd: LoadCommand) -> LoadState:
        """Switch a plug or load controller; the attribute report that follows becomes LoadFeedback.

        Raises:
            AdapterError: the address is invalid or unknown, the radio is down, or the
                device refused or did not acknowledge the command.
        """
        prefix = f"{ADAPTER}:"
        if not cmd.actuator.startswith(prefix):
            raise AdapterError(f"not a ZigBee actuator: {cmd.actuator!r}", adapter=ADAPTER, retryable=False)
        try:
            addr = parse_actuator(cmd.actuator[len(prefix):])
        except ValueError as exc:
            raise AdapterError(f"{cmd.actuator}: {exc}", adapter=ADAPTER, retryable=False) from exc
        app = self.app
        if app is None:
            raise AdapterError("ZigBee radio not running", adapter=ADAPTER)
        try:
            endpoint = app.get_device(ieee=t.EUI64.convert(addr.ieee)).endpoints[addr.endpoint]
            on_off = endpoint.in_clusters[OnOff.cluster_id]
        except KeyError:
            raise AdapterError(f"{cmd.actuator}: no such device/endpoint with an On/Off server",
                               adapter=ADAPTER, retryable=False) from None
        self._watch(addr, endpoint, cmd.actuator)
        on = cmd.action is LoadAction.RESTORE
        limit = None
        try:
            async with asyncio.timeout(self.config.command_timeout_s):
                if cmd.action is LoadAction.LIMIT:
                    limit = cmd.limit_w if cmd.limit_w is not None else 0.0
                    on = limit > 0
                    if on:
                        level_cluster = endpoint.in_clusters.get(LevelControl.cluster_id)
                        if addr.rated_w is None or level_cluster is None:
                            raise AdapterError(
                                f"{cmd.actuator}: LIMIT needs ?rated_w=<W> and a Level Control server",
                                adapter=ADAPTER, retryable=False)
                        level = max(1, min(254, round(254 * limit / addr.rated_w)))
                        rsp = await level_cluster.move_to_level_with_on_off(level=level, transition_time=0)
                    else:
                        rsp = await on_off.off()
                else:
                    rsp = await (on_off.on() if on else on_off.off())
        except (TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            raise AdapterError(f"{cmd.actuator}: command not acknowledged: {exc!r}", adapter=ADAPTER) from exc
        status = getattr(rsp, "status", foundation.Status.SUCCESS)
        if status != foundation.Status.SUCCESS:
            raise AdapterError(f"{cmd.actuator}: device answered {status!r}", adapter=ADAPTER)
        self.counters["commands"] += 1
        log.info("load %s: %s via %s (rule %s)", cmd.load, cmd.action.value, cmd.actuator, cmd.rule or "-")
        event = self._confirmed.setdefault(cmd.actuator, asyncio.Event())
        event.clear()
        self._spawn(self._confirm_later(addr, on_off, cmd.actuator, event), f"zigbee:confirm:{cmd.actuator}")
        return LoadState(load=cmd.load, on=on, since=self.clock.now(), reason=cmd.reason, rule=cmd.rule,
                         limit_w=limit if cmd.action is LoadAction.LIMIT and on else None, until=cmd.until)

    def _watch(self, addr: ActuatorAddress, endpoint: Any, actuator: str) -> None:
        """Listen for On/Off attribute reports of an actuator the rules command (once per address)."""
        key = (addr.ieee, addr.endpoint)
        if key in self._watched:
            return
        self._watched[key] = actuator
        cluster = endpoint.in_clusters[OnOff.cluster_id]

        def on_report(event: Any) -> None:
            if event.attribute_id == OnOff.AttributeDefs.on_off.id:
                self._feedback(actuator, bool(event.value))

        cluster.on_event("attribute_report", on_report)
        cluster.on_event("attribute_updated", on_report)

    def _feedback(self, actuator: str, on: bool) -> None:
        self.counters["feedback"] += 1
        if actuator in self._confirmed:
            self._confirmed[actuator].set()
        if self._bus is not None:
            self._bus.publish(LoadFeedback(actuator=actuator, on=on, at=self.clock.now()))

    async def _confirm_later(self, addr: ActuatorAddress, on_off: Any, actuator: str,
                             event: asyncio.Event) -> None:
        """No report within ``confirm_timeout_s``: read the attribute instead (devices without reporting)."""
        try:
            async with asyncio.timeout(self.config.confirm_timeout_s):
                await event.wait()
                return
        except TimeoutError:
            pass
        try:
            async with asyncio.timeout(self.config.command_timeout_s):
                success, _failure = await on_off.read_attributes(["on_off"], allow_cache=False)
        except (TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            log.warning("%s: no confirmation (no report, read failed: %r)", actuator, exc)
            return
        if "on_off" in success:
            self._feedback(actuator, bool(success["on_off"]))


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - shutting down a failed radio must not mask the cause
        log.debug("ZigBee shutdown: %r", exc)
