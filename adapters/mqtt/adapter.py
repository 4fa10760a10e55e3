"""MQTT adapter: store-and-forward of meter snapshots, with Home Assistant discovery.

MQTT 3.1.1 (OASIS 2014) or 5.0 through paho-mqtt 2.x, driven on the asyncio
loop (STYLE 2.6 item 7): the socket callbacks ``on_socket_open`` /
``on_socket_close`` / ``on_socket_(un)register_write`` map to
``loop.add_reader`` / ``add_writer`` and a task calls ``loop_misc()`` every
quarter keepalive (1 to 5 s).  Only the blocking ``connect()`` (DNS, TCP, TLS handshake)
runs in the default executor, as aiomqtt did; there is no network thread.

Delivery (at-least-once): snapshots come only from the outbox.  The newest
pending item of each meter is published as live state (retained), older ones
(the backlog after an outage) to ``.../history`` in id order at
``backlog_rate_per_s``.  An outbox row is acked only after the broker
acknowledged (PUBACK/PUBCOMP) the state or history message carrying it; rows
unacknowledged when a connection drops are sent again on the next one, so
subscribers de-duplicate by the snapshot's timestamp.

Flow: a round is woken by ``OutboxChanged`` (or the poll); the state message
of a new item is written to the socket before its per-quantity messages are
even queued (30-odd per DSMR telegram), and the acks of earlier items are
handed to the outbox after the round's publishing.  The messages published
and not yet acknowledged are bounded (``_outstanding_max``).  When the adapter
falls behind (a thousand telegrams a second), new items wait in per-session
queues, each meter's newest as live and the ones it superseded as history;
history goes first: every snapshot still reaches the broker, and each
meter's per-quantity topics carry its newest values as often as the budget
allows.

Every connection attempt uses a fresh paho client with a clean session: paho's
own resend queue is never relied on, the outbox is the only queue.  Reconnects
use ``gateway.backoff.Backoff`` (full jitter, reset on CONNACK, jump to the cap
when the broker refuses the credentials).

Home Assistant discovery: a retained config per (meter, quantity) when the
quantity is first seen, re-published after every (re)connect and whenever
``<prefix>/status`` says ``online``.  Stale configs: on the first connection
the adapter subscribes to ``<prefix>/sensor/+/+/config`` and notes the retained
configs this gateway published before (recognised by its status topic in
their availability list).  Once every configured meter has published a live
snapshot, or ``stale_grace_s`` after the first connection, or on
:meth:`MqttAdapter.clear_stale_discovery`, those that are no longer produced
are cleared with an empty retained payload; configs of configured meters that
have not reported yet are kept.

Control (``control = true``, see :mod:`adapters.mqtt.control`): price and DR
messages on ``price/set`` / ``dr/set`` go to the signal gate as
``SignalInput``; overrides on ``load/<name>/set`` go to the rule runner as
``OverrideRequest``; the current price, DR events and load states are
published retained, refusals on ``error``.  As an actuator (``mqtt:<topic>``)
``apply`` publishes the command at QoS 1 and returns once the broker
acknowledged it; without a connection it raises ``AdapterError`` and the rule
runner retries.

Not supported: WebSockets transport, persistent sessions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import itertools
import json
import logging
import math
import re
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from adapters.base import AdapterContext, Health, Outbox, stop_task
from adapters.mqtt.config import MqttConfig
from adapters.mqtt.control import (
    actuator_payload,
    dr_json,
    dr_report_json,
    error_json,
    load_state_json,
    parse_override,
    price_json,
)
from adapters.mqtt.discovery import (
    OFFLINE,
    ONLINE,
    DeviceInfo,
    Topics,
    config_payload,
    device_block,
    device_info,
    ha_quantities,
)
from adapters.mqtt.throttle import Throttle
from gateway.backoff import Backoff
from gateway.bus import (
    Bus,
    DrEventReport,
    MeterStatus,
    OutboxChanged,
    OverrideRequest,
    OverrideResult,
    SignalInput,
    SignalRejected,
    Subscription,
)
from gateway.clock import Clock, RealClock
from gateway.errors import AdapterError, StoreError
from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    LoadState,
    OutboxItem,
    PriceSignal,
    Reading,
    Snapshot,
)
from gateway.quantities import Quantity, normalised_value

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "these credentials will not do" (MQTT 5 §3.2.2.2;
# paho maps the 3.1.1 return codes 4 and 5 onto 0x86 and 0x87).
_AUTH_REFUSED = frozenset({0x86, 0x87, 0x8C})

_PAGE = 100  # outbox rows per backlog query
_LIVE_PAGE = 1000  # new outbox rows per query
# New rows fetched and not yet published, at most (see _publish_new).
_QUEUED_MAX = 2000
# Acks waiting for a round wake the loop once this many gathered.
_ACK_BATCH = 500
# Messages published and not yet acknowledged (in flight or queued in paho).
# Bounds paho's memory and keeps far below the 65535 packet ids, which a
# reused id would confuse.
_OUTSTANDING_MIN = 1000
_REQUESTS = itertools.count(1)
_GRACEFUL_S = 2.0  # bound on the offline PUBACK and the DISCONNECT at stop


class ConnectionState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing off"
    AUTH_REFUSED = "authentication refused"
    STOPPED = "stopped"


class _End(enum.Enum):
    """How one connection attempt ended."""

    FAILED = "failed"  # never connected
    AUTH = "auth"  # broker refused the credentials
    LOST = "lost"  # was connected, then the connection dropped
    STOPPED = "stopped"  # stop() asked us to finish


@dataclass(slots=True)
class _Session:
    """Bookkeeping of one broker connection; thrown away when it ends."""

    client: paho.Client
    connack: asyncio.Future[ReasonCode]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: bool = False
    started: bool = False  # the initial newest-per-meter step ran
    backlog_end: int = 0  # ids <= this existed at connect time
    live_cursor: int = 0  # every id <= this was fetched: queued below, or published
    # fetched, not yet published: each meter's newest item (live), and items a
    # newer one of their meter superseded (history), oldest first
    queued_live: dict[str, OutboxItem] = field(default_factory=dict)
    queued_history: collections.deque[OutboxItem] = field(default_factory=collections.deque)
    hist_cursor: int = 0  # backlog published up to this id
    sent: set[int] = field(default_factory=set)  # outbox ids published here
    item_mids: dict[int, int] = field(default_factory=dict)  # mid -> outbox id
    other_mids: set[int] = field(default_factory=set)  # other QoS>0 messages in flight
    cmd_mids: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # actuator commands
    filter_mid: int | None = None  # SUBSCRIBE for the discovery scan
    filter_ready_at: float | None = None  # monotonic time of its SUBACK
    tokens: float = 0.0
    tokens_at: float = 0.0
    # A round is waiting for PUBACKs (no budget left, or the backlog is being
    # paced), or _goodbye waits for one: then every PUBACK wakes the loop.
    # Otherwise acks wait for the next round (the next OutboxChanged, or the
    # poll): with one telegram a second, one round a telegram instead of two.
    wants_pubacks: bool = False

    @property
    def inflight(self) -> int:
        return len(self.item_mids) + len(self.other_mids)


class MqttAdapter:
    """The ``mqtt`` adapter: see the module docstring.

    Lifecycle: ``await start(bus)`` spawns and owns the task running
    :meth:`run`; ``await stop()`` publishes ``offline``, disconnects cleanly
    and ends it.  A supervisor may instead await ``run(bus)`` itself and
    cancel it; cancelling also publishes ``offline`` first (bounded by 2 s).
    """

    name = "mqtt"

    def __init__(
        self,
        *,
        gateway_id: str,
        config: MqttConfig,
        outbox: Outbox,
        meters: Iterable[str] = (),
        secrets: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self._outbox = outbox
        self._meters = tuple(meters)
        self._secrets = dict(secrets or {})
        self._clock: Clock = clock or RealClock()
        self.topics = Topics(
            base=config.base_topic, gateway=gateway_id, prefix=config.discovery_prefix
        )
        self._throttle = Throttle(
            min_interval_s=config.min_interval_for,
            deadband=config.deadband.get,
            heartbeat_s=config.heartbeat_s,
        )
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._session: _Session | None = None
        self._state = ConnectionState.IDLE
        self._detail = "not started"
        self._to_ack: list[int] = []
        self._meter_online: dict[str, bool] = {}
        # meter -> (key, [(quantity, value topic)]) of its last snapshot (see _quantities)
        self._quantity_memo: dict[str, tuple[Any, list[tuple[Quantity, str]]]] = {}
        self._outstanding_max = max(_OUTSTANDING_MIN, 4 * config.max_inflight)
        # discovery: (meter, key) -> (config topic, payload); device info per meter
        self._discovered: dict[tuple[str, str], tuple[str, str]] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._republish_discovery = False
        self._previous_configs: set[str] = set()  # our retained configs found on the broker
        self._live_meters: set[str] = set()  # meters with a live snapshot published
        self._sweep_done = not config.discovery
        self._sweep_requested = False
        self._first_connected_at: float | None = None
        self._backlog_checked_at = -math.inf
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._counters: dict[str, int] = {
            "published": 0,
            "acked": 0,
            "reconnects": 0,
            "connects": 0,
            "auth_failures": 0,
            "connect_failures": 0,
            "backlog": 0,
            "history": 0,
            "suppressed": 0,
            "refused": 0,
            "stale_cleared": 0,
            "signals_in": 0,
            "overrides_in": 0,
            "commands": 0,
            "rejected_in": 0,
        }
        self._dr_published: set[str] = set()

    @classmethod
    def from_context(cls, context: AdapterContext, *, clock: Clock | None = None) -> MqttAdapter:
        """Build from the supervisor's context (``context.config`` is validated here).

        Raises:
            pydantic.ValidationError: the config section is invalid (the plugin's
                ``create`` turns it into ``ConfigError``).
        """
        raw = context.config
        config = raw if isinstance(raw, MqttConfig) else MqttConfig.model_validate(dict(raw))
        return cls(
            gateway_id=context.gateway_id,
            config=config,
            outbox=context.outbox,
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
        self._task = asyncio.create_task(self.run(bus), name=f"adapter:mqtt:{self.gateway_id}")

    async def stop(self) -> None:
        """Publish ``offline``, disconnect cleanly and end the task started by ``start``."""
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        await stop_task(task, grace_s=_GRACEFUL_S * 3, what="MQTT adapter")

    async def run(self, bus: Bus) -> None:
        """Connect, publish and reconnect until ``stop()`` or cancellation."""
        self._bus = bus
        sub: Subscription[OutboxChanged | MeterStatus] = bus.subscribe(
            OutboxChanged, MeterStatus, maxsize=1000
        )
        control: Subscription[Any] = bus.subscribe(
            PriceSignal, DemandResponseEvent, LoadState, SignalRejected, OverrideResult,
            DrEventReport, maxsize=1000,
        )
        for status in bus.last_status.values():
            self._meter_online[status.meter] = status.online
        try:
            async with asyncio.TaskGroup() as tg:
                events = tg.create_task(self._events(sub), name="adapter:mqtt:events")
                ctl = tg.create_task(self._control_events(control), name="adapter:mqtt:control")
                try:
                    await self._connection_loop()
                finally:
                    events.cancel()
                    ctl.cancel()
        finally:
            sub.close()
            control.close()
            self._state = ConnectionState.STOPPED
            self._detail = "stopped"

    def health(self) -> Health:
        counters = dict(self._counters)
        counters["suppressed"] = self._throttle.suppressed
        session = self._session
        counters["inflight"] = session.inflight if session is not None else 0
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            return Health(ok=False, detail=f"crashed: {task.exception()!r}", counters=counters,
                          crashed=True)
        return Health(
            ok=self._state is ConnectionState.CONNECTED, detail=self._detail, counters=counters
        )

    @property
    def _client_id(self) -> str:
        return self.config.client_id or f"han-gateway-{self.gateway_id}"

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def clear_stale_discovery(self) -> int:
        """Clear our stale discovery configs now instead of after the grace period.

        Returns how many were cleared (0 when not connected or the scan of the
        broker's retained configs has not finished).
        """
        self._sweep_requested = True
        session = self._session
        if session is None or not session.connected:
            return 0
        return self._sweep_stale(session, force=True)

    # ------------------------------------------------------------- bus events
    async def _events(self, sub: Subscription[OutboxChanged | MeterStatus]) -> None:
        async for event in sub:
            if isinstance(event, OutboxChanged):
                self._wake.set()
            else:
                self._on_meter_status(event)

    async def _control_events(self, sub: Subscription[Any]) -> None:
        async for event in sub:
            session = self._session
            if session is None or not session.connected or not self.config.control:
                continue  # the current price, events and states are sent at (re)connect
            if isinstance(event, SignalRejected):
                self._publish(session, self.topics.error,
                              error_json(event.kind, event.source, event.reason, event.received),
                              retain=False, qos=0)
            elif isinstance(event, DrEventReport):
                self._publish_tracked(session, self.topics.dr_report(event.event_id or "unknown"),
                                      dr_report_json(event), retain=False)
            elif isinstance(event, OverrideResult):
                if not event.ok:
                    self._publish(session, self.topics.error,
                                  error_json("override", "", event.reason, self._clock.now(),
                                             self.topics.load_state(event.load)),
                                  retain=False, qos=0)
            else:
                self._publish_control_state(session, event)

    def _publish_control_state(
        self, session: _Session, event: PriceSignal | DemandResponseEvent | LoadState
    ) -> None:
        if isinstance(event, PriceSignal):
            self._publish_tracked(session, self.topics.price, price_json(event), retain=True)
        elif isinstance(event, DemandResponseEvent):
            topic = self.topics.dr(event.event_id)
            if event.cancelled:
                self._publish_tracked(session, topic, b"", retain=True)
                self._dr_published.discard(event.event_id)
            else:
                for old in event.supersedes:
                    if old in self._dr_published:
                        self._publish_tracked(session, self.topics.dr(old), b"", retain=True)
                        self._dr_published.discard(old)
                self._publish_tracked(session, topic, dr_json(event), retain=True)
                self._dr_published.add(event.event_id)
        else:
            self._publish_tracked(session, self.topics.load_state(event.load),
                                  load_state_json(event), retain=True)

    # -------------------------------------------------------------- actuator
    async def apply(self, cmd: LoadCommand) -> LoadState:
        """Publish the command to the load's ``mqtt:<topic>``; returns after the PUBACK.

        Raises:
            AdapterError: not connected, or the broker refused the message.
        """
        scheme, _, topic = cmd.actuator.partition(":")
        if scheme != "mqtt" or not topic:
            raise AdapterError(f"not an MQTT actuator: {cmd.actuator!r}", adapter="mqtt",
                               retryable=False)
        session = self._session
        if session is None or not session.connected:
            raise AdapterError("MQTT broker not connected", adapter="mqtt")
        cfg = self.config
        payload = actuator_payload(cmd, on=cfg.actuator_payload_on,
                                   off=cfg.actuator_payload_off, as_json=cfg.actuator_json)
        info = session.client.publish(topic, payload, qos=1, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AdapterError(f"MQTT publish to {topic} failed: {paho.error_string(info.rc)}",
                               adapter="mqtt")
        self._counters["published"] += 1
        self._counters["commands"] += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        session.cmd_mids[info.mid] = done
        try:
            await done
        finally:
            session.cmd_mids.pop(info.mid, None)
        return LoadState(load=cmd.load, on=cmd.action is not LoadAction.SHED,
                         since=self._clock.now(), reason=cmd.reason, rule=cmd.rule,
                         limit_w=cmd.limit_w if cmd.action is LoadAction.LIMIT else None,
                         until=cmd.until)

    def _on_meter_status(self, status: MeterStatus) -> None:
        before = self._meter_online.get(status.meter)
        self._meter_online[status.meter] = status.online
        session = self._session
        if before != status.online and session is not None and session.connected:
            self._publish_availability(session, status.meter, status.online)

    # -------------------------------------------------------- connection loop
    async def _connection_loop(self) -> None:
        while not self._stop.is_set():
            end = await self._connect_and_serve()
            if end is _End.STOPPED or self._stop.is_set():
                return
            if end is _End.AUTH:
                self._backoff.jump_to_cap()
            delay = self._backoff.next_delay()
            if self._state is not ConnectionState.AUTH_REFUSED:
                self._state = ConnectionState.BACKING_OFF
            log.info("MQTT broker %s: next attempt in %.1f s", self.config.broker, delay)
            deadline = self._clock.monotonic() + delay
            while not self._stop.is_set():
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
                # Keep the backlog figure in health() current during an outage.
                self._wake.clear()
                await self._refresh_backlog()
                try:
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await self._wake.wait()  # stop() and OutboxChanged set it
                except TimeoutError:
                    pass

    async def _refresh_backlog(self) -> None:
        self._backlog_checked_at = self._clock.monotonic()
        try:
            self._counters["backlog"] = await self._outbox.count()
        except StoreError as exc:
            log.warning("MQTT: cannot count the outbox: %s", exc)

    def _make_client(self) -> paho.Client:
        """A fresh paho client for one connection attempt.

        Raises:
            OSError: a TLS file cannot be read.
            ssl.SSLError: a TLS file is not a certificate/key.
        """
        cfg = self.config
        client_id = self._client_id
        if cfg.protocol == "5":
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=True,
                protocol=MQTTProtocolVersion.MQTTv311,
            )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(cfg.max_inflight)
        client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.resolve_password(self._secrets))
        if cfg.tls:
            client.tls_set(
                ca_certs=str(cfg.tls_ca) if cfg.tls_ca else None,
                certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
                keyfile=str(cfg.tls_key) if cfg.tls_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls_insecure)
        return client

    async def _connect_and_serve(self) -> _End:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._state = ConnectionState.CONNECTING
        try:
            client = self._make_client()
        except (OSError, ValueError) as exc:
            self._connect_failed(f"TLS/credential files: {exc}")
            return _End.FAILED
        session = _Session(client=client, connack=loop.create_future())
        # loop_misc() sends PINGREQ once keepalive_s passed without traffic (and
        # gives up when no PINGRESP came within keepalive_s): checking every
        # quarter of that (1..5 s) pings at most 25 % late, well within the
        # 1.5 x keepalive_s the broker waits, with fewer wake-ups than 1 Hz.
        driver = _LoopDriver(client, loop, misc_interval_s=min(5.0, max(1.0, cfg.keepalive_s / 4)))
        self._install_callbacks(session)
        connect = loop.run_in_executor(None, self._blocking_connect, client)
        try:
            if not await self._until(connect, cfg.connect_timeout_s + 1.0):
                if self._stop.is_set():
                    return _End.STOPPED
                self._connect_failed("timed out")
                return _End.FAILED
            try:
                connect.result()
            except (OSError, ValueError) as exc:
                self._connect_failed(str(exc) or type(exc).__name__)
                return _End.FAILED
            driver.attach(session)
            closed = asyncio.ensure_future(session.closed.wait())
            try:
                await self._until(session.connack, cfg.connect_timeout_s, closed)
            finally:
                closed.cancel()
            if not session.connack.done():
                if self._stop.is_set():
                    return _End.STOPPED
                self._connect_failed("closed before CONNACK" if session.closed.is_set()
                                     else "no CONNACK")
                return _End.FAILED
            reason = session.connack.result()
            if reason.is_failure:
                return self._refused(reason)
            return await self._serve(session)
        finally:
            if connect.done():
                await self._finish(session, driver)
            else:
                # The executor thread is still inside connect(): close its socket
                # once it returns; it is not ours to drive any more.
                connect.add_done_callback(driver.close_unattached)

    async def _until(
        self, fut: asyncio.Future[Any], timeout: float, *also: asyncio.Future[Any]
    ) -> bool:
        """Wait for ``fut`` (not cancelling it) until ``timeout``, ``stop()`` or one of ``also``.

        Returns whether ``fut`` is done.
        """
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({fut, stop, *also}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        return fut.done()

    def _blocking_connect(self, client: paho.Client) -> None:
        """Runs in the executor: DNS, TCP connect, TLS handshake, CONNECT queued.

        Raises:
            OSError: refused, unreachable, TLS failure, timeout.
        """
        cfg = self.config
        if cfg.protocol == "5":
            client.connect(cfg.host, cfg.port, cfg.keepalive_s, clean_start=True)
        else:
            client.connect(cfg.host, cfg.port, cfg.keepalive_s)

    def _connect_failed(self, why: str) -> None:
        self._counters["connect_failures"] += 1
        self._state = ConnectionState.BACKING_OFF
        self._detail = f"cannot connect to {self.config.broker}: {why}"
        log.warning("MQTT broker %s: cannot connect: %s", self.config.broker, why)

    def _refused(self, reason: ReasonCode) -> _End:
        if reason.value in _AUTH_REFUSED:
            self._counters["auth_failures"] += 1
            self._state = ConnectionState.AUTH_REFUSED
            self._detail = "authentication refused"
            log.error(
                "MQTT broker %s refused user %r: %s (check username/password)",
                self.config.broker,
                self.config.username,
                reason.getName(),
            )
            return _End.AUTH
        self._connect_failed(f"refused: {reason.getName()}")
        return _End.FAILED

    # -------------------------------------------------------- paho callbacks
    def _install_callbacks(self, session: _Session) -> None:
        client = session.client

        def on_connect(
            _c: paho.Client,
            _u: object,
            _flags: paho.ConnectFlags,
            reason: ReasonCode,
            _props: Properties | None,
        ) -> None:
            if not session.connack.done():
                session.connack.set_result(reason)

        def on_disconnect(
            _c: paho.Client,
            _u: object,
            _flags: paho.DisconnectFlags,
            reason: ReasonCode,
            _props: Properties | None,
        ) -> None:
            if session.connected and not self._stop.is_set():
                log.warning(
                    "MQTT broker %s: connection lost: %s", self.config.broker, reason.getName()
                )
            session.closed.set()
            for fut in session.cmd_mids.values():
                if not fut.done():
                    fut.set_exception(AdapterError("MQTT connection lost before the PUBACK",
                                                   adapter="mqtt"))
            session.cmd_mids.clear()
            self._wake.set()

        def on_publish(
            _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _props: Properties
        ) -> None:
            self._on_publish(session, mid, reason)

        def on_subscribe(
            _c: paho.Client,
            _u: object,
            mid: int,
            _reasons: list[ReasonCode],
            _props: Properties | None,
        ) -> None:
            if mid == session.filter_mid:
                session.filter_ready_at = self._clock.monotonic()
                self._wake.set()

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            self._on_message(msg)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    def _on_publish(self, session: _Session, mid: int, reason: ReasonCode) -> None:
        fut = session.cmd_mids.pop(mid, None)
        if fut is not None and not fut.done():
            if reason.is_failure:
                fut.set_exception(AdapterError(f"the broker refused the command: "
                                               f"{reason.getName()}", adapter="mqtt"))
            else:
                fut.set_result(None)
        item_id = session.item_mids.pop(mid, None)
        session.other_mids.discard(mid)
        if reason.is_failure:
            self._counters["refused"] += 1
            log.warning(
                "MQTT broker %s refused a publication (mid %d): %s",
                self.config.broker,
                mid,
                reason.getName(),
            )
            return
        if item_id is not None:
            self._to_ack.append(item_id)
        if session.wants_pubacks or len(self._to_ack) >= _ACK_BATCH:
            self._wake.set()

    def _on_message(self, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if self.config.control and self._on_control(msg):
            return
        if topic == self.topics.ha_status:
            if msg.payload.strip() == b"online":
                log.info("Home Assistant is online: re-publishing discovery")
                self._republish_discovery = True
                self._wake.set()
            return
        if self._sweep_done or not self.topics.is_own_config_topic(topic):
            return
        if not msg.payload:
            self._previous_configs.discard(topic)
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        if _is_own_config(payload, self.topics):
            self._previous_configs.add(topic)

    def _on_control(self, msg: paho.MQTTMessage) -> bool:
        """Handle a message on a control topic; False when it is not one."""
        topic = msg.topic
        t = self.topics
        kind = "price" if topic == t.price_set else "dr" if topic == t.dr_set else None
        load = None if kind is not None else t.load_from_set_topic(topic)
        if kind is None and load is None:
            return False
        bus = self._bus
        if bus is None:
            return True
        now = self._clock.now()
        if msg.retain:
            # A retained command is stale by definition: never re-apply it at reconnect.
            self._counters["rejected_in"] += 1
            log.warning("MQTT: retained message on %s ignored (publish commands without retain)",
                        topic)
            self._error(topic, kind or "override", "retained messages are ignored on /set "
                        "topics; publish without retain", now)
            return True
        if kind is not None:
            self._counters["signals_in"] += 1
            bus.publish(SignalInput(kind=kind, payload=bytes(msg.payload), source="mqtt",
                                    received=now))
            return True
        assert load is not None
        try:
            ov = parse_override(bytes(msg.payload))
        except ValueError as exc:
            self._counters["rejected_in"] += 1
            log.warning("MQTT: override on %s refused: %s", topic, exc)
            self._error(topic, "override", str(exc), now)
            return True
        self._counters["overrides_in"] += 1
        bus.publish(OverrideRequest(request_id=f"mqtt-{next(_REQUESTS)}", load=load,
                                    mode=ov.mode, source="mqtt", limit_w=ov.limit_w,
                                    duration_s=ov.duration_s))
        return True

    def _error(self, topic: str, kind: str, reason: str, now: Any) -> None:
        session = self._session
        if session is not None and session.connected:
            self._publish(session, self.topics.error,
                          error_json(kind, "mqtt", reason, now, topic), retain=False, qos=0)

    # ----------------------------------------------------------------- serve
    async def _serve(self, session: _Session) -> _End:
        cfg = self.config
        client = session.client
        session.connected = True
        self._session = session
        now = self._clock.monotonic()
        if self._counters["connects"] > 0:
            self._counters["reconnects"] += 1
        self._counters["connects"] += 1
        if self._first_connected_at is None:
            self._first_connected_at = now
        self._backoff.reset()
        self._state = ConnectionState.CONNECTED
        self._detail = f"connected to {cfg.broker}"
        self._throttle.forget()
        session.tokens_at = now
        log.info("MQTT broker %s: connected as %s", cfg.broker, self._client_id)

        self._publish(session, self.topics.status, ONLINE, retain=True)
        for meter, online in self._meter_online.items():
            self._publish_availability(session, meter, online)
        if cfg.discovery:
            client.subscribe(self.topics.ha_status, qos=1)
            if not self._sweep_done:
                _rc, session.filter_mid = client.subscribe(self.topics.discovery_filter, qos=0)
            for topic, payload in self._discovered.values():
                self._publish(session, topic, payload, retain=True)
        if cfg.control:
            t = self.topics
            client.subscribe([(t.price_set, 1), (t.dr_set, 1), (t.load_set_filter, 1)])
            bus = self._bus
            if bus is not None:
                if bus.last_price is not None:
                    self._publish_control_state(session, bus.last_price)
                for ev in bus.dr_events.values():
                    self._publish_control_state(session, ev)
                for st in bus.load_states.values():
                    self._publish_control_state(session, st)

        while True:
            if self._stop.is_set():
                await self._flush_acks_quietly()
                return _End.STOPPED
            if session.closed.is_set():
                await self._flush_acks_quietly()
                return _End.LOST
            # Cleared before the round: a wake-up during its awaits is kept.
            self._wake.clear()
            try:
                await self._pump(session)
            except StoreError as exc:
                # The rows stay queued; the next round (or connection) retries them.
                log.error("MQTT: outbox failed: %s; retrying in %.1f s", exc, cfg.poll_interval_s)
                await self._sleep_unless_woken(cfg.poll_interval_s)
                continue
            timeout = cfg.poll_interval_s
            if session.hist_cursor < session.backlog_end:
                timeout = min(timeout, max(0.02, 1.0 / cfg.backlog_rate_per_s))
            await self._sleep_unless_woken(timeout)

    async def _sleep_unless_woken(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _pump(self, session: _Session) -> None:
        """One round: discovery chores, live items, a paced slice of backlog, acks.

        Acks come last: a new item is published before the store commits the
        acks of the previous ones.
        """
        session.wants_pubacks = False
        if self._republish_discovery:
            self._republish_discovery = False
            for topic, payload in self._discovered.values():
                self._publish(session, topic, payload, retain=True)
        if not session.started:
            await self._publish_initial(session)
        await self._publish_new(session)
        await self._publish_backlog(session)
        if session.hist_cursor < session.backlog_end:
            session.wants_pubacks = True  # paced by max_inflight too
        self._maybe_sweep(session)
        await self._flush_acks()
        if self._clock.monotonic() - self._backlog_checked_at >= 1.0:
            await self._refresh_backlog()

    async def _flush_acks(self) -> None:
        if not self._to_ack:
            return
        ids, self._to_ack = self._to_ack, []
        try:
            await self._outbox.ack(ids)
        except StoreError:
            self._to_ack[:0] = ids  # confirmed by the broker: ack them later
            raise
        self._counters["acked"] += len(ids)
        if self._session is not None:
            # Acked rows leave the outbox, so they cannot come back: forget them.
            self._session.sent.difference_update(ids)

    async def _publish_initial(self, session: _Session) -> None:
        """At connect: the newest pending item per meter goes live; older is backlog."""
        window = max(32, 8 * max(1, len(self._meters)))
        top = sorted(await self._outbox.newest(limit=window), key=lambda i: i.id)
        session.started = True
        if not top:
            return
        session.backlog_end = top[-1].id
        session.live_cursor = top[-1].id
        for item in _newest_per_meter(top):
            self._publish_live(session, item)

    async def _publish_new(self, session: _Session) -> None:
        """Items appended since the last round: each meter's newest live, the rest history.

        New rows are fetched once, into the session's queues: an item waits
        there as its meter's live one until a newer one of the same meter
        replaces it and sends it to history.  Then, while the messages not yet
        acknowledged stay under ``_outstanding_max`` (PUBACKs wake the next
        round): history first (one message each), then the live items' state
        messages, written to the socket at once, then their per-quantity
        messages.  A gateway that keeps up finds one live item per meter and
        publishes it in the round its OutboxChanged woke; one that falls behind
        publishes every snapshot, and each meter's per-quantity topics as often
        as it can, with the newest values.
        """
        while (
            not session.closed.is_set()
            and len(session.queued_history) + len(session.queued_live) < _QUEUED_MAX
        ):
            batch = await self._outbox.pending(after_id=session.live_cursor, limit=_LIVE_PAGE)
            if any(a.id >= b.id for a, b in itertools.pairwise(batch)):
                batch = sorted(batch, key=lambda i: i.id)
            for item in batch:
                if item.id <= session.live_cursor:
                    continue
                session.live_cursor = item.id
                if item.id in session.sent:
                    continue
                meter = item.snapshot.meter
                older = session.queued_live.pop(meter, None)
                if older is not None:
                    session.queued_history.append(older)
                session.queued_live[meter] = item
            if len(batch) < _LIVE_PAGE:
                break
        if session.closed.is_set():
            return
        try:
            self._publish_queued(session)
        finally:
            # Work left: the PUBACKs that free the budget must wake the next round.
            if session.queued_history or session.queued_live:
                session.wants_pubacks = True

    def _publish_queued(self, session: _Session) -> None:
        budget = self._outstanding_max - session.inflight
        history = session.queued_history
        while history and budget > 0:
            item = history.popleft()
            if item.id not in session.sent:
                self._publish_history(session, item)
                budget -= 1
        if history or not session.queued_live:
            return
        live: list[Snapshot] = []
        for meter, item in sorted(session.queued_live.items(), key=lambda kv: kv[1].id):
            # a live item costs its state message and up to one per reading
            cost = 1 + len(item.snapshot.readings)
            if cost > budget and (live or session.inflight):
                break
            del session.queued_live[meter]
            if item.id not in session.sent and self._publish_state(session, item):
                live.append(item.snapshot)
                budget -= cost
        _flush(session.client)
        for snapshot in live:
            self._publish_quantities(session, snapshot)

    async def _publish_backlog(self, session: _Session) -> None:
        cfg = self.config
        now = self._clock.monotonic()
        burst = max(1.0, cfg.backlog_rate_per_s)
        session.tokens = min(burst, session.tokens + (now - session.tokens_at) * cfg.backlog_rate_per_s)
        session.tokens_at = now
        while (
            session.hist_cursor < session.backlog_end
            and session.tokens >= 1.0
            and session.inflight < cfg.max_inflight
            and not session.closed.is_set()
        ):
            limit = min(_PAGE, int(session.tokens), cfg.max_inflight - session.inflight)
            batch = sorted(
                await self._outbox.pending(after_id=session.hist_cursor, limit=limit),
                key=lambda i: i.id,
            )
            if not batch:
                session.hist_cursor = session.backlog_end
                return
            for item in batch:
                if item.id > session.backlog_end:
                    session.hist_cursor = session.backlog_end
                    return
                session.hist_cursor = item.id
                if item.id in session.sent:
                    continue
                self._publish_history(session, item)
                session.tokens -= 1.0

    # --------------------------------------------------------------- publish
    def _publish(
        self,
        session: _Session,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool,
        qos: int | None = None,
    ) -> int | None:
        """Queue one message; returns its mid, or None when paho refused it."""
        info = session.client.publish(
            topic, payload, qos=self.config.qos if qos is None else qos, retain=retain
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("MQTT publish to %s not queued: %s", topic, paho.error_string(info.rc))
            return None
        self._counters["published"] += 1
        return info.mid

    def _publish_tracked(
        self,
        session: _Session,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool,
        item_id: int | None = None,
    ) -> bool:
        mid = self._publish(session, topic, payload, retain=retain)
        if mid is None:
            return False
        if item_id is not None:
            session.item_mids[mid] = item_id
        else:
            session.other_mids.add(mid)
        return True

    def _publish_availability(self, session: _Session, meter: str, online: bool) -> None:
        self._publish_tracked(
            session, self.topics.availability(meter), ONLINE if online else OFFLINE, retain=True
        )

    def _publish_history(self, session: _Session, item: OutboxItem) -> None:
        payload = _item_json(item)
        if self._publish_tracked(
            session, self.topics.history(item.snapshot.meter), payload, retain=False,
            item_id=item.id,
        ):
            session.sent.add(item.id)
            self._counters["history"] += 1

    def _publish_live(self, session: _Session, item: OutboxItem) -> None:
        """The state message, then one message per quantity."""
        if self._publish_state(session, item):
            self._publish_quantities(session, item.snapshot)

    def _publish_state(self, session: _Session, item: OutboxItem) -> bool:
        snapshot = item.snapshot
        if not self._publish_tracked(
            session, self.topics.state(snapshot.meter), _item_json(item), retain=True,
            item_id=item.id,
        ):
            return False
        session.sent.add(item.id)
        return True

    def _publish_quantities(self, session: _Session, snapshot: Snapshot) -> None:
        meter = snapshot.meter
        if meter not in self._meter_online:
            # No reader status seen (yet): a fresh snapshot is proof of life.
            self._meter_online[meter] = True
            self._publish_availability(session, meter, True)
        if self.config.discovery:
            self._update_device(session, meter, device_info(snapshot))
        now = self._clock.monotonic()
        discovery = self.config.discovery
        should_publish = self._throttle.should_publish
        # The per-quantity messages are most of what the adapter publishes
        # (30-odd per DSMR telegram): paho's publish() called directly.
        publish = session.client.publish
        qos = self.config.qos
        in_flight = session.other_mids
        published = 0
        for reading, quantity, value_topic in self._quantities(snapshot):
            value = normalised_value(reading, quantity)
            if isinstance(value, float) and not math.isfinite(value):
                continue
            if discovery and (meter, quantity.key) not in self._discovered:
                topic = self.topics.config(meter, quantity.key)
                payload = json.dumps(
                    config_payload(
                        self.topics,
                        meter,
                        quantity,
                        self._devices[meter],
                        expire_after_s=self.config.expire_after_s,
                    ),
                    ensure_ascii=False,
                )
                self._discovered[(meter, quantity.key)] = (topic, payload)
                self._publish_tracked(session, topic, payload, retain=True)
                log.info("HA discovery: %s/%s published", meter, quantity.key)
            if should_publish(meter, quantity.key, value, now=now):
                info = publish(value_topic, _format_value(value), qos=qos, retain=True)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    in_flight.add(info.mid)
                    published += 1
                else:
                    log.debug("MQTT publish to %s not queued: %s", value_topic,
                              paho.error_string(info.rc))
        self._counters["published"] += published
        self._live_meters.add(meter)

    def _quantities(self, snapshot: Snapshot) -> list[tuple[Reading, Quantity, str]]:
        """``ha_quantities(snapshot)`` with each value topic, memoised per meter.

        A meter sends the same readings in every snapshot, and what
        ``ha_quantities`` makes of a reading depends only on its id, unit,
        whether the value is text, its ``extra``, the M-Bus device types
        of the snapshot (values of ``0-n:24.1.0``) and, for an M-Bus meter,
        the medium in its device id.  That is the memo's key: when it matches
        the previous snapshot's, the previous answer holds.
        """
        key = (snapshot.device_id, tuple(  # the device id: an M-Bus meter's medium
            (
                r.id,
                r.unit,
                r.value if _is_device_type(r.id) else isinstance(r.value, str),
                r.extra,
            )
            for r in snapshot.readings
        ))
        memo = self._quantity_memo.get(snapshot.meter)
        if memo is None or memo[0] != key:
            meter = snapshot.meter
            plan = [
                (q, self.topics.quantity(meter, q.key)) for _r, q in ha_quantities(snapshot)
            ]
            memo = (key, plan)
            self._quantity_memo[meter] = memo
        return [(r, q, t) for r, (q, t) in zip(snapshot.readings, memo[1], strict=True)]

    def _update_device(self, session: _Session, meter: str, info: DeviceInfo) -> None:
        """Remember the meter's device block; re-publish its configs when it changed."""
        if self._devices.get(meter) == info:
            return
        known = meter in self._devices
        self._devices[meter] = info
        if not known:
            return
        for (m, key), (topic, _old) in list(self._discovered.items()):
            if m != meter:
                continue
            config = json.loads(_old)
            config["device"] = device_block(self.topics, meter, info)
            payload = json.dumps(config, ensure_ascii=False)
            self._discovered[(m, key)] = (topic, payload)
            self._publish_tracked(session, topic, payload, retain=True)

    # ----------------------------------------------------- stale discovery
    def _maybe_sweep(self, session: _Session) -> None:
        if self._sweep_done or session.filter_ready_at is None:
            return
        now = self._clock.monotonic()
        if now - session.filter_ready_at < 0.5:
            return  # retained configs follow the SUBACK; give them time to arrive
        configured = set(self._meters)
        all_live = bool(configured) and configured <= self._live_meters
        grace_over = (
            self._first_connected_at is not None
            and now - self._first_connected_at >= self.config.stale_grace_s
        )
        if all_live or grace_over or self._sweep_requested:
            self._sweep_stale(session, force=False)

    def _sweep_stale(self, session: _Session, *, force: bool) -> int:
        """Clear retained configs we published before and produce no more.

        A config is kept when its meter is configured but has not sent a live
        snapshot since start (we cannot know yet what it will produce).
        """
        if self._sweep_done and not force:
            return 0
        if session.filter_ready_at is None:
            return 0
        produced = {topic for topic, _ in self._discovered.values()}
        node_to_meter = {self.topics.node_id(m): m for m in (*self._meters, *self._live_meters)}
        cleared = 0
        for topic in sorted(self._previous_configs - produced):
            node = topic.split("/")[-3]
            meter = node_to_meter.get(node)
            if meter is not None and meter not in self._live_meters:
                continue
            if self._publish_tracked(session, topic, b"", retain=True):
                cleared += 1
        self._previous_configs.clear()
        self._sweep_done = True
        self._counters["stale_cleared"] += cleared
        session.client.unsubscribe(self.topics.discovery_filter)
        session.filter_ready_at = None
        log.info("HA discovery: %d stale config(s) cleared", cleared)
        return cleared

    # ------------------------------------------------------------ teardown
    async def _finish(self, session: _Session, driver: _LoopDriver) -> None:
        """End a connection: ``offline`` + DISCONNECT when it is up, then close."""
        if self._session is session:
            self._session = None
        try:
            if session.connected and not session.closed.is_set():
                await self._goodbye(session)
        finally:
            driver.detach()
            session.connected = False
            await self._flush_acks_quietly()

    async def _goodbye(self, session: _Session) -> None:
        session.wants_pubacks = True
        mid = self._publish(session, self.topics.status, OFFLINE, retain=True, qos=1)
        if mid is not None:
            session.other_mids.add(mid)
            try:
                async with asyncio.timeout(_GRACEFUL_S):
                    while mid in session.other_mids and not session.closed.is_set():
                        self._wake.clear()
                        await self._wake.wait()
            except TimeoutError:
                log.warning("MQTT broker %s: no PUBACK for offline status", self.config.broker)
        session.client.disconnect()
        try:
            async with asyncio.timeout(_GRACEFUL_S):
                await session.closed.wait()
        except TimeoutError:
            pass
        log.info("MQTT broker %s: disconnected", self.config.broker)

    async def _flush_acks_quietly(self) -> None:
        try:
            await self._flush_acks()
        except StoreError as exc:
            log.warning("MQTT: acking %d outbox rows failed: %s", len(self._to_ack), exc)


class _LoopDriver:
    """Drives one paho client from the asyncio loop's selector (no network thread)."""

    def __init__(
        self, client: paho.Client, loop: asyncio.AbstractEventLoop, *, misc_interval_s: float = 1.0
    ) -> None:
        self._client = client
        self._loop = loop
        self._misc_interval_s = misc_interval_s
        self._thread_id = threading.get_ident()
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def _on_loop(self) -> bool:
        # connect() runs in the executor and fires these callbacks there; attach()
        # does the registration on the loop afterwards.
        return threading.get_ident() == self._thread_id

    def attach(self, session: _Session) -> None:
        sock = self._client.socket()
        if sock is None:
            return
        self._add(sock)
        if self._client.want_write():
            self._loop.add_writer(sock, self._write)
        self._misc = self._loop.create_task(self._misc_loop(), name="adapter:mqtt:misc")

    def detach(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        sock = self._client.socket()
        if sock is not None:
            self._remove(sock)
            sock.close()
        elif self._sock is not None:
            self._remove(self._sock)

    def close_unattached(self, connect: asyncio.Future[None]) -> None:
        if not connect.cancelled() and connect.exception() is not None:
            return  # connect() failed and closed its socket itself
        sock = self._client.socket()
        if sock is not None and self._sock is None:
            sock.close()

    def _add(self, sock: Any) -> None:
        self._sock = sock
        self._loop.add_reader(sock, self._read)

    def _remove(self, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._sock = None

    def _read(self) -> None:
        client = self._client
        client.loop_read()
        # TLS: the SSL object may hold decrypted bytes the selector cannot see.
        for _ in range(1000):
            sock = client.socket()
            if not isinstance(sock, ssl.SSLSocket) or sock.pending() == 0:
                break
            client.loop_read()

    def _write(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.sleep(self._misc_interval_s)

    def _on_socket_open(self, _c: paho.Client, _u: object, sock: Any) -> None:
        # paho leaves Nagle on: a small command published right after another
        # message would then wait for the broker's delayed ACK (40 ms on Linux).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_loop():
            self._add(sock)

    def _on_socket_close(self, _c: paho.Client, _u: object, sock: Any) -> None:
        if self._on_loop() and self._sock is not None:
            self._remove(sock)

    def _on_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        if self._on_loop() and self._sock is not None:
            self._loop.add_writer(sock, self._write)

    def _on_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:
        if self._on_loop() and self._sock is not None:
            self._loop.remove_writer(sock)


# ---------------------------------------------------------------- helpers
def _newest_per_meter(items: list[OutboxItem]) -> list[OutboxItem]:
    best: dict[str, OutboxItem] = {}
    for item in items:
        cur = best.get(item.snapshot.meter)
        if cur is None or item.id > cur.id:
            best[item.snapshot.meter] = item
    return sorted(best.values(), key=lambda i: i.id)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _snapshot_json(snapshot: Snapshot) -> str:
    data = snapshot.to_json()
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN/inf from a meter: JSON has no spelling for them
        return json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False)


def _item_json(item: OutboxItem) -> str:
    """The snapshot's JSON: the outbox's own where it hands it out (the SQLite
    store's ``StoredItem.payload`` is what ``_snapshot_json`` would write, but
    for NaN and infinities, which it spells as Python does)."""
    payload = getattr(item, "payload", None)
    if isinstance(payload, str) and "NaN" not in payload and "Infinity" not in payload:
        return payload
    return _snapshot_json(item.snapshot)


def _format_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    # What json.dumps writes for these, without its overhead (this runs once
    # per quantity per snapshot); subclasses (bool) go through json.dumps.
    t = type(value)
    if t is float:
        return float.__repr__(value)
    if t is int:
        return int.__repr__(value)
    return json.dumps(value)


# The ids gateway.quantities.channel_media reads M-Bus device types from:
# OBIS 0-n:24.1.0 with any F group, numbers with up to three digits.
_DEVICE_TYPE = re.compile(r"0{1,3}-\d{1,3}:0?24\.0{0,2}1\.0{1,3}(?:[*.&]\d{1,3})?")


@functools.lru_cache(maxsize=4096)
def _is_device_type(reading_id: str) -> bool:
    """Whether the id is an M-Bus device type object ``0-n:24.1.0`` (see _quantities)."""
    return _DEVICE_TYPE.fullmatch(reading_id) is not None


def _flush(client: paho.Client) -> None:
    """Write what paho has queued now, instead of at the loop's next turn."""
    if client.want_write():
        client.loop_write()


def _is_own_config(payload: object, topics: Topics) -> bool:
    """Whether a retained discovery config was published by this gateway.

    The gateway's status topic in its availability list is exact; unique-id
    prefixes alone are not (gateway ``home`` vs ``home_2``).
    """
    if not isinstance(payload, dict):
        return False
    unique_id = payload.get("unique_id")
    if not isinstance(unique_id, str) or not unique_id.startswith("han_gateway_"):
        return False
    availability = payload.get("availability")
    if not isinstance(availability, list):
        return False
    return any(isinstance(a, dict) and a.get("topic") == topics.status for a in availability)

