"""Fixtures for the household page: the web server on loopback fed by a real store and bus,
a seeded history, the real gateway in a thread for the browser, and headless Chromium.

- ``build_stack(tmp, ...)``: Store + Bus + WebServer on 127.0.0.1:0, with an
  ``OverrideResponder`` (the rule engine's side of the bus: the web component's
  peer, answering ``OverrideRequest`` as the rule runner does) for API tests
  that need no meter.
- ``seed_history(store, ...)``: hourly snapshots of a DSMR-like meter (tariff
  registers, export, power) over the last ``days`` days up to given register
  values, so the history has last week and last year to compare with.
- ``LiveGateway``: the real ``gateway.supervisor.Gateway`` with ``[web]``,
  ``[rules]`` (one MQTT-switched load) and a private mosquitto, fed by a
  virtual DSMR 5 meter on a pty, on an event loop in a thread (selenium and
  schemathesis are synchronous).
- ``chrome``: Debian's chromium through chromedriver, headless, fresh profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.bus import Bus, OverrideRequest, OverrideResult
from gateway.model import LoadState, Reading, Snapshot
from gateway.store import Store
from gateway.web import WebConfig, WebContext, WebServer
from gateway.web.config import hash_password

T = TypeVar("T")

PASSWORD = "correct horse battery"
# cheap scrypt for tests (2**10): the cost parameter is part of the stored hash
PASSWORD_HASH = hash_password(PASSWORD, log2_n=10)
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts")) / "web"
LOADS = [{"name": "boiler", "rated_power_w": 2400.0, "priority": 1, "description": "water heater",
          "actuator": "mqtt:home/boiler/set"}]


# ----------------------------------------------------------------- history
def hourly_kwh(t: datetime) -> float:
    """A household's import in the hour starting at ``t``: evening peak, more in winter."""
    hour = t.hour + t.minute / 60
    daily = 0.25 + 0.9 * math.exp(-(((hour - 19) / 2.5) ** 2)) + 0.4 * math.exp(-(((hour - 8) / 1.5) ** 2))
    season = 1.0 + 0.35 * math.cos(2 * math.pi * (t.timetuple().tm_yday - 15) / 365)
    return daily * season


async def seed_history(store: Store, *, meter: str = "main", end: datetime, days: int,
                       import_kwh: tuple[float, float] = (5000.0, 4000.0),
                       export_kwh: tuple[float, float] = (300.0, 200.0)) -> list[Snapshot]:
    """Hourly snapshots from ``end - days`` to ``end`` ending at the given register values."""
    start = (end - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    times = []
    t = start
    while t < end:
        times.append(t)
        t += timedelta(hours=1)
    rates = [hourly_kwh(x) for x in times]
    total = sum(rates)
    snaps = []
    done = 0.0
    for x, rate in zip(times, rates, strict=True):
        remaining = total - done
        t1 = import_kwh[0] - remaining * 0.6
        t2 = import_kwh[1] - remaining * 0.4
        e1 = export_kwh[0] - remaining * 0.05
        e2 = export_kwh[1] - remaining * 0.03
        snaps.append(Snapshot(
            meter=meter, protocol="dsmr", device_id="seed", timestamp=x, received=x,
            readings=(
                Reading(id="1-0:1.8.1", value=round(t1, 3), unit="kWh"),
                Reading(id="1-0:1.8.2", value=round(t2, 3), unit="kWh"),
                Reading(id="1-0:2.8.1", value=round(e1, 3), unit="kWh"),
                Reading(id="1-0:2.8.2", value=round(e2, 3), unit="kWh"),
                Reading(id="1-0:1.7.0", value=round(rate, 3), unit="kW"),
            )))
        done += rate
    await store.append_many(snaps, destinations=(), batch_size=2000)
    return snaps


# ------------------------------------------------------------------- stack
class OverrideResponder:
    """Answers OverrideRequests on the bus as the rule runner does (known load: accepted
    and its new LoadState published; otherwise refused with the reason)."""

    def __init__(self, bus: Bus, loads: tuple[str, ...] = ("boiler",)) -> None:
        self.bus = bus
        self.loads = loads
        self.requests: list[OverrideRequest] = []
        self._task: asyncio.Task[None] | None = None
        self.silent = False  # True: never answer (the 504 path)

    def start(self) -> None:
        sub = self.bus.subscribe(OverrideRequest)
        self._task = asyncio.create_task(self._run(sub), name="test:override-responder")

    async def _run(self, sub: Any) -> None:
        try:
            async for req in sub:
                self.requests.append(req)
                if self.silent:
                    continue
                ok = req.load in self.loads
                self.bus.publish(OverrideResult(request_id=req.request_id, load=req.load, ok=ok,
                                                reason="" if ok else f"no load named {req.load!r} is configured"))
                if ok and req.mode in ("on", "off"):
                    now = datetime.now(UTC)
                    self.bus.publish(LoadState(load=req.load, on=req.mode == "on", since=now, override=True,
                                               reason=f"manual override ({req.source})",
                                               until=now + timedelta(seconds=req.duration_s or 3600)))
        finally:
            sub.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class Stack:
    store: Store
    bus: Bus
    server: WebServer
    responder: OverrideResponder
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    async def close(self) -> None:
        await self.responder.stop()
        await self.server.stop()
        await self.store.close()


async def build_stack(tmp: Path, *, password_hash: str | None = PASSWORD_HASH, **web: Any) -> Stack:
    store = await Store.open(tmp / "web.sqlite3", raw_retention_s=800 * 86400)
    bus = Bus()
    health: dict[str, Any] = {"ok": True, "meters": {"main": {"online": True, "frames": 0, "errors": 0}},
                              "adapters": {}, "components": {"store-writer": {"running": True, "restarts": 0,
                                                                              "last_error": ""}}}
    reloads: list[str | None] = [None]

    async def reload_rules() -> str | None:
        return reloads[0]

    cfg = WebConfig(listen="127.0.0.1:0", password_hash=password_hash, timezone="Europe/Brussels", **web)
    server = WebServer(WebContext(
        gateway_id="test", config=cfg, bus=bus, store=store, health=lambda: health, loads=lambda: LOADS,
        reload_rules=reload_rules, version="0.0-test", started=datetime.now(UTC)))
    responder = OverrideResponder(bus)
    responder.start()
    await server.start()
    return Stack(store=store, bus=bus, server=server, responder=responder, health=health)


# ------------------------------------------------------- a loop in a thread
class LoopThread:
    """An asyncio loop on its own thread, for synchronous clients (selenium, schemathesis)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(_cancel_rest(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------ live gateway
RULES = """
[[load]]
name = "boiler"
description = "electric water heater"
actuator = "mqtt:home/boiler/set"
rated_power = "2.4 kW"
priority = 1
"""


@dataclass
class LiveGateway:
    url: str
    gw: Any
    lt: LoopThread
    seeded: list[Snapshot]


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory, mosquitto_factory: Any) -> Iterator[LiveGateway]:
    """The real Gateway (meter → store → rules → MQTT, [web]) fed by a virtual DSMR meter,
    with a year of seeded history; runs on a loop thread until the module ends."""
    from gateway.config import parse_config
    from gateway.sim.dsmr import DsmrSimulator
    from gateway.sim.runner import PtyMeter, push_to_pty
    from gateway.supervisor import Gateway

    tmp = tmp_path_factory.mktemp("live-gateway")
    broker = mosquitto_factory()
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "boiler.toml").write_text(RULES)
    meter = PtyMeter()
    sim = DsmrSimulator("dsmr5", seed=7)
    cfg = parse_config({
        "gateway": {"id": "web", "data_dir": str(tmp / "data"), "shutdown_timeout_s": 5},
        "store": {"raw_retention_days": 800},
        "meter": [{"id": "main", "protocol": "dsmr", "port": meter.path}],
        "adapter": {"mqtt": {"url": broker.url}},
        "rules": {"dir": str(rules)},
        "web": {"listen": "127.0.0.1:0", "password_hash": PASSWORD_HASH, "timezone": "Europe/Brussels"},
    }, file="(test)", base_dir=tmp)
    gw = Gateway(cfg)
    lt = LoopThread()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(push_to_pty(meter, sim.telegram, 0.5), name="test:meter"))
        tasks.append(asyncio.create_task(gw.run(), name="test:gateway"))

    def up(cond: Callable[[], Any]) -> Any:
        for t in tasks:
            if t.done():
                raise AssertionError(f"{t.get_name()} ended: {t.exception()!r}")
        return cond()

    lt.run(start())
    try:
        wait_until(lambda: up(lambda: gw.web is not None and gw.web._url is not None), 60, "the web server")
        first = wait_until(lambda: up(lambda: gw.bus.last_snapshot.get("main")), 60, "the first telegram")

        def reg(rid: str) -> float:
            r = first.reading(rid)
            assert r is not None and isinstance(r.value, float), rid
            return r.value

        seeded = lt.run(seed_history(
            gw.store, end=first.timestamp - timedelta(seconds=30), days=400,
            import_kwh=(reg("1-0:1.8.1"), reg("1-0:1.8.2")),
            export_kwh=(reg("1-0:2.8.1"), reg("1-0:2.8.2"))), timeout=300)
        yield LiveGateway(url=gw.web.url, gw=gw, lt=lt, seeded=seeded)
    finally:
        lt.close()
        meter.close()


# ------------------------------------------------------------------ chrome
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    found = _chromium()
    if found is None:
        pytest.skip("Debian chromium and chromium-driver are not installed (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = found
    opts = Options()
    opts.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en-GB",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors (CSP, JS) for the tests
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
