"""The only composer: builds the bus, store, meter readers and adapters from a
validated Config, runs them under one TaskGroup, restarts crashed components
with backoff, and tells systemd when it is ready and healthy.

Data flow:  meter readers --Snapshot--> bus --> store writer --(outbox rows)-->
OutboxChanged --> adapters, which publish and ack.  A snapshot is in the
SQLite outbox before any adapter sees it, so broker outages and crashes lose
nothing that was read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.backoff import Backoff
from gateway.bus import Bus, OutboxChanged
from gateway.clock import Clock, RealClock
from gateway.config import Config, adapter_plugins
from gateway.meters.base import MeterReader
from gateway.errors import AdapterError, ConfigError, GatewayError, StoreError
from gateway.model import LoadCommand, LoadState, Snapshot
from gateway.sdnotify import Notifier
from gateway.store import AuditEntry, Store

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
ADAPTER_WATCH_S = 2.0
WRITE_BATCH = 200


def build_reader(cfg_meter: Any, clock: Clock) -> MeterReader:
    from gateway.meters.registry import reader_class

    try:
        cls = reader_class(cfg_meter.protocol)
    except KeyError:
        raise GatewayError(f"no reader for protocol {cfg_meter.protocol!r}") from None
    return cls(cfg_meter, clock=clock)


@dataclass(slots=True)
class Component:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str = ""
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))


class Gateway:
    def __init__(self, cfg: Config, *, clock: Clock | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or RealClock()
        self.notifier = notifier or Notifier()
        self.bus = Bus()
        self.store: Store | None = None
        self.readers: dict[str, MeterReader] = {}
        self.adapters: dict[str, Any] = {}
        self.components: dict[str, Component] = {}
        self.ready = asyncio.Event()
        self._writer_busy = False
        self.rules: Any = None  # gateway.rules.runner.RuleRunner when [rules] dir is set
        self.signals: Any = None  # gateway.signals.gate.SignalGate
        self.openadr: Any = None  # gateway.signals.openadr.OpenAdrVen
        self.web: Any = None  # gateway.web.WebServer when [web] is set
        self.started = self.clock.now()
        self._reloading: asyncio.Task[None] | None = None
        self._outbox_dests: list[str] = []

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        """Run until cancelled; shut down sources → store writer → adapters → store."""
        gw = self.cfg.gateway
        gw.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await Store.open(
            gw.data_dir / "gateway.sqlite3",
            clock=self.clock,
            raw_retention_s=self.cfg.store.raw_retention_days * 86400,
            outbox_max_rows=self.cfg.store.outbox_max_rows,
        )
        try:
            await self._start_adapters()
            snaps = self.bus.subscribe(Snapshot, maxsize=10000)
            self._build_signals()
            self._build_rules()
            await self._start_web()
            async with asyncio.TaskGroup() as tg:
                sources: list[asyncio.Task[None]] = []
                for m in self.cfg.meter:
                    reader = build_reader(m, self.clock)
                    reader.base_dir = self.cfg.base_dir
                    reader.data_dir = gw.data_dir
                    self.readers[m.id] = reader
                    sources.append(tg.create_task(
                        self._supervise(f"meter:{m.id}", functools.partial(reader.run, self.bus)),
                        name=f"meter:{m.id}"))
                writer = tg.create_task(self._supervise("store-writer", lambda: self._store_writer(snaps)),
                                        name="store-writer")
                tg.create_task(self._supervise("prune", self._prune_loop), name="prune")
                gate = self.signals
                tg.create_task(self._supervise("signals", gate.run), name="signals")
                if self.rules is not None:
                    tg.create_task(self._supervise("rules", self.rules.run), name="rules")
                if self.openadr is not None:
                    tg.create_task(self._supervise("openadr", self.openadr.run), name="openadr")
                tg.create_task(self._watchdog(), name="watchdog")
                tg.create_task(self._supervise("adapter-watch", self._adapter_watch),
                               name="adapter-watch")
                self.ready.set()
                log.info("gateway %s running: %d meter(s), adapters: %s", gw.id, len(self.readers),
                         ", ".join(self.adapters) or "none")
                try:
                    await asyncio.Event().wait()
                finally:
                    # Orderly shutdown: stop reading, let the writer flush, then stop the rest.
                    for t in sources:
                        t.cancel()
                    await asyncio.gather(*sources, return_exceptions=True)
                    # Never cancel the writer mid-batch (that batch would be lost): wait
                    # until it has written everything the readers produced, then stop it.
                    try:
                        async with asyncio.timeout(self.cfg.gateway.shutdown_timeout_s):
                            while self._writer_busy or snaps.qsize():
                                await asyncio.sleep(0.01)
                    except TimeoutError:
                        log.error("store writer did not drain within the shutdown timeout")
                    writer.cancel()
                    # Leaving the TaskGroup cancels the remaining housekeeping tasks.
        finally:
            self.notifier.notify("STOPPING=1")
            if self.web is not None:
                try:
                    await self.web.stop()
                except GatewayError as exc:
                    log.warning("web page did not stop cleanly: %s", exc)
            for name, adapter in self.adapters.items():
                try:
                    async with asyncio.timeout(self.cfg.gateway.shutdown_timeout_s):
                        await adapter.stop()
                except (TimeoutError, GatewayError) as exc:
                    log.warning("adapter %s did not stop cleanly: %s", name, exc)
            await self.store.close()

    async def _start_adapters(self) -> None:
        from adapters.base import AdapterContext

        assert self.store is not None
        plugins = adapter_plugins()
        for name, model in self.cfg.adapter_configs().items():
            plugin = plugins[name].load()
            ctx = AdapterContext(
                gateway_id=self.cfg.gateway.id,
                config=model,
                outbox=self.store.outbox(name),
                meters=tuple(m.id for m in self.cfg.meter),
                started=self.started,
                data_dir=self.cfg.gateway.data_dir,
            )
            adapter = plugin.create(ctx)
            await adapter.start(self.bus)
            self.adapters[name] = adapter
            if getattr(plugin, "uses_outbox", False):
                # Only adapters that drain (and ack) the outbox get rows: the others
                # take live values from the bus, and their rows would only pile up.
                self._outbox_dests.append(name)

    # ------------------------------------------------- signals, rules, web
    def _build_signals(self) -> None:
        from gateway.signals.gate import SignalGate
        from gateway.signals.signing import Verifier

        sig = self.cfg.signals
        verifier = Verifier(self.cfg.trusted_keys, require=sig.require_signature,
                            max_validity=timedelta(seconds=sig.max_validity_s))
        self.signals = SignalGate(self.bus, verifier, state=self.store, audit=self._audit,
                                  clock=self.clock)
        if self.cfg.openadr is not None:
            from gateway.signals.openadr import OpenAdrVen

            self.openadr = OpenAdrVen(self.cfg.openadr, self.bus, self.cfg.gateway.id,
                                      clock=self.clock)

    def _rule_dir(self) -> Path | None:
        d = self.cfg.rules.dir
        if d is None:
            return None
        base = self.cfg.base_dir
        return d if d.is_absolute() or base is None else base / d

    def _build_rules(self) -> None:
        from gateway.rules import load_rule_dir
        from gateway.rules.runner import RuleRunner

        directory = self._rule_dir()
        if directory is None:
            return
        rules = load_rule_dir(directory)  # validated by `check` and `run` already; raises if not
        r = self.cfg.rules
        seed = r.seed if r.seed is not None else secrets.randbits(32)
        self.rules = RuleRunner(rules, bus=self.bus, dispatch=self._dispatch, audit=self._audit,
                                clock=self.clock, seed=seed, tick_s=r.tick_s,
                                override_default_s=r.override_default_s)
        log.info("rules from %s: %d load(s), %d rule(s)", directory, len(rules.loads),
                 len(rules.rules))

    async def _dispatch(self, cmd: LoadCommand) -> LoadState | None:
        """Route a command to the adapter its actuator names (``mqtt:…`` → ``mqtt``)."""
        scheme = cmd.actuator.partition(":")[0]
        adapter = self.adapters.get(scheme)
        if adapter is None or not hasattr(adapter, "apply"):
            raise AdapterError(f"load {cmd.load}: no running adapter can switch {scheme}: "
                               f"actuators (configure [adapter.{scheme}])", adapter=scheme)
        state: LoadState | None = await adapter.apply(cmd)
        return state

    async def _audit(self, rows: Any) -> None:
        assert self.store is not None
        await self.store.append_audit([AuditEntry(**row) for row in rows])

    async def reload_rules(self) -> str | None:
        """Validate the rule folder fully, then swap it in; a bad folder keeps the old
        rules.  Returns None when reloaded, else the problems (also logged)."""
        from gateway.rules import load_rule_dir

        directory = self._rule_dir()
        if directory is None or self.rules is None:
            log.warning("rule reload: no [rules] dir is configured, nothing to reload (the "
                        "config file is read at start only: restart the service for it)")
            return "no [rules] dir is configured"
        try:
            rules = await asyncio.to_thread(load_rule_dir, directory)
        except ConfigError as exc:
            text = str(exc)
            log.error("rule reload refused, keeping the old rules:\n%s", text)
            await self._audit([{"ts": self.clock.now(), "kind": "reload", "action": "refused",
                                "reason": text[:2000], "source": "reload"}])
            return text
        self.rules.reload(rules)
        log.info("rules reloaded from %s: %d load(s), %d rule(s)", directory, len(rules.loads),
                 len(rules.rules))
        return None

    def request_reload(self) -> None:
        """SIGHUP: reload the rule files in the background (one reload at a time)."""
        if self._reloading is not None and not self._reloading.done():
            log.warning("SIGHUP: a rule reload is already running")
            return
        self._reloading = asyncio.create_task(self._reload_quietly(), name="rules:reload")

    async def _reload_quietly(self) -> None:
        try:
            await self.reload_rules()
        except GatewayError as exc:
            log.error("rule reload failed: %s", exc)

    async def _start_web(self) -> None:
        web = self.cfg.web_config
        if web is None:
            return
        from gateway import __version__
        from gateway.web import WebContext, WebServer

        assert self.store is not None
        rules = self.rules
        self.web = WebServer(WebContext(
            gateway_id=self.cfg.gateway.id,
            config=web,
            bus=self.bus,
            store=self.store,
            health=self.health,
            loads=(lambda: rules.load_specs()) if rules is not None else (lambda: []),
            reload_rules=self.reload_rules if rules is not None else None,
            version=__version__,
            started=self.started,
        ))
        await self.web.start()
        log.info("household page on %s", self.web.url)

    # ------------------------------------------------------------ components
    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a component; restart it with backoff when it crashes.

        The one place allowed a broad ``except Exception``: a bug in one
        component must not take the gateway down, but it is logged in full.
        """
        comp = self.components.setdefault(name, Component(name))
        while True:
            comp.running = True
            try:
                await factory()
                log.warning("component %s returned; restarting", name)
            except asyncio.CancelledError:
                comp.running = False
                raise
            except Exception as exc:  # noqa: BLE001 - see docstring
                comp.last_error = repr(exc)
                log.error("component %s crashed: %r; restarting", name, exc, exc_info=True)
            comp.running = False
            comp.restarts += 1
            await self.clock.sleep(comp.backoff.next_delay())

    async def _store_writer(self, snaps: Any) -> None:
        assert self.store is not None
        dests = tuple(self._outbox_dests)
        while True:
            first = await snaps.get()
            self._writer_busy = True
            try:
                batch = [first]
                while len(batch) < WRITE_BATCH and (nxt := snaps.get_nowait()) is not None:
                    batch.append(nxt)
                retry = Backoff(0.1, 5.0)
                while True:
                    try:
                        # shield: a cancelled await must not abandon a batch taken off the queue
                        last_id = await asyncio.shield(self.store.append_many(batch, destinations=dests))
                        break
                    except StoreError as exc:
                        # Keep the batch and retry: a full disk or a locked file is often transient.
                        log.error("cannot write %d snapshot(s) to the store: %s; retrying", len(batch), exc)
                        await self.clock.sleep(retry.next_delay())
                self.bus.publish(OutboxChanged(last_id=last_id))
            finally:
                self._writer_busy = False

    async def _adapter_watch(self) -> None:
        """Restart an adapter whose own task crashed (a bug, not a network outage: those
        an adapter rides out itself), with backoff; meters and store keep running."""
        backoffs: dict[str, Backoff] = {}
        due: dict[str, float] = {}
        while True:
            await self.clock.sleep(ADAPTER_WATCH_S)
            for name, adapter in self.adapters.items():
                health = adapter.health()
                if not getattr(health, "crashed", False):
                    continue
                now = self.clock.monotonic()
                backoff = backoffs.setdefault(name, Backoff(1.0, 60.0))
                if name not in due:
                    due[name] = now + backoff.next_delay()
                    log.error("adapter %s crashed (%s); restarting it", name, health.detail)
                if now < due[name]:
                    continue
                del due[name]
                comp = self.components.setdefault(f"adapter:{name}", Component(f"adapter:{name}"))
                comp.restarts += 1
                comp.last_error = health.detail
                try:
                    await adapter.stop()
                    await adapter.start(self.bus)
                except GatewayError as exc:
                    log.error("adapter %s did not restart: %s", name, exc)
                    comp.running = False
                else:
                    comp.running = True

    async def _prune_loop(self) -> None:
        assert self.store is not None
        while True:
            now = self.clock.now()
            await self.store.prune(now)
            await self.store.prune_audit(now - timedelta(days=self.cfg.rules.audit_retention_days))
            await self.clock.sleep(PRUNE_INTERVAL_S)

    # --------------------------------------------------------------- health
    def healthy(self) -> bool:
        return all(c.running for c in self.components.values())

    def health(self) -> dict[str, Any]:
        return {
            "ok": self.healthy(),
            "meters": {k: {"online": r.online, "frames": r.counters.frames, "errors": r.counters.errors,
                           "checksum_errors": r.counters.checksum_errors,
                           "decryption_errors": r.counters.decryption_errors,
                           "detail": r.status_detail,
                           "last_reading": snap.received.isoformat()
                           if (snap := self.bus.last_snapshot.get(k)) is not None else None}
                       for k, r in self.readers.items()},
            # the OpenADR VEN is a network link too (its health has the adapters' fields)
            "adapters": {**{k: a.health() for k, a in self.adapters.items()},
                         **({"openadr": self.openadr.health()} if self.openadr is not None else {})},
            "components": {k: {"running": c.running, "restarts": c.restarts, "last_error": c.last_error}
                           for k, c in self.components.items()},
        }

    async def _watchdog(self) -> None:
        """READY=1 once started; WATCHDOG=1 only while every component runs, so
        systemd restarts a gateway whose tasks are dead or whose loop is stuck."""
        self.notifier.notify("READY=1", "STATUS=running")
        interval = (self.notifier.watchdog_s or 20.0) / 2
        while True:
            if self.healthy():
                online = sum(1 for r in self.readers.values() if r.online)
                self.notifier.notify("WATCHDOG=1", f"STATUS={online}/{len(self.readers)} meters online")
            else:
                bad = [c.name for c in self.components.values() if not c.running]
                self.notifier.notify(f"STATUS=unhealthy: {', '.join(bad)}")
            await self.clock.sleep(interval)


async def run_until_signalled(gateway: Gateway) -> None:
    """Run the gateway; SIGTERM/SIGINT cancel it for an orderly shutdown."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    # SIGHUP reloads the rule files (validated first; a bad set keeps the old rules).
    # The config file itself is read at start only: restart the service for it.
    loop.add_signal_handler(signal.SIGHUP, gateway.request_reload)
    try:
        await gateway.run()
    except asyncio.CancelledError:
        log.info("gateway stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
