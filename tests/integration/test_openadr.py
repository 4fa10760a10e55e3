"""The OpenADR 2.0b VEN against a real openleadr VTN (OpenADRServer) on loopback.

Each test starts its own VTN on a free port (plain HTTP, or mutual TLS with
certificates made here with ``cryptography``), runs the VEN on a real Bus and
watches both ends: what reaches the bus, and what the VTN receives (opt
types, metered-data reports, registrations).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytest.importorskip("openleadr", reason="openleadr (han-gateway[openadr]) is not installed")

from openleadr import OpenADRServer, objects, utils  # noqa: E402

from gateway.bus import Bus  # noqa: E402
from gateway.clock import RealClock  # noqa: E402
from gateway.model import DemandResponseEvent, MeterFrame, PriceSignal, Snapshot  # noqa: E402
from gateway.protocols.dsmr import DsmrDecoder  # noqa: E402
from gateway.signals.openadr import OpenAdrConfig, OpenAdrVen, meter_values  # noqa: E402
from gateway.sim.dsmr import DsmrSimulator  # noqa: E402

VTN_ID = "TEST-VTN"
VEN_ID = "ven-han-1"
REGISTRATION_ID = "reg-1"
DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FastClock(RealClock):
    """Real time, but the VEN's waits (poll interval, backoff) are cut to 50 ms."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.05))


async def until(pred: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)
    assert pred(), what


@dataclass
class Vtn:
    """An openleadr VTN that registers one VEN and records what it hears."""

    port: int
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    ven_fingerprint: str | None = None
    server: Any = None
    registrations: int = 0
    opts: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    reports: asyncio.Queue[tuple[str, datetime, float]] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        scheme = "https" if self.cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    async def start(self) -> None:
        tls: dict[str, Any] = {}
        if self.cert is not None:
            tls = {"cert": str(self.cert), "key": str(self.key), "http_cert": str(self.cert),
                   "http_key": str(self.key), "http_ca_file": str(self.ca)}
        self.server = OpenADRServer(vtn_id=VTN_ID, http_host="127.0.0.1", http_port=self.port,
                                    requested_poll_freq=timedelta(seconds=1),
                                    ven_lookup=self._ven_lookup, show_fingerprint=False, **tls)
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)
        await self.server.run()

    async def stop(self) -> None:
        await self.server.stop()

    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        if ven_id != VEN_ID:
            return None
        return {"ven_id": VEN_ID, "ven_name": "han", "registration_id": REGISTRATION_ID,
                "fingerprint": self.ven_fingerprint}

    def _register(self, payload: dict[str, Any]) -> tuple[str, str]:
        self.registrations += 1
        return VEN_ID, REGISTRATION_ID

    def _register_report(self, ven_id: str, resource_id: str, measurement: str, unit: str,
                         scale: str, min_sampling_interval: timedelta,
                         max_sampling_interval: timedelta) -> tuple[Any, timedelta]:
        def collect(values: list[tuple[datetime, float]]) -> None:
            for at, value in values:
                self.reports.put_nowait((measurement, at, value))

        return collect, min_sampling_interval

    def add_event(self, *, event_id: str, level: float, start: datetime | None = None,
                  duration: timedelta = timedelta(minutes=30),
                  resources: tuple[str, ...] = (), startafter: timedelta | None = None) -> None:
        start = start or datetime.now(UTC) + timedelta(minutes=5)
        targets = [objects.Target(ven_id=VEN_ID)]
        targets += [objects.Target(resource_id=r) for r in resources]
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id, modification_number=0, market_context="oadr://han.test",
                event_status="far"),
            event_signals=[objects.EventSignal(
                intervals=[objects.Interval(dtstart=start, duration=duration,
                                            signal_payload=level)],
                signal_name="SIMPLE", signal_type="level", signal_id=f"{event_id}-s")],
            targets=targets,
        )

        def on_opt(ven_id: str, event_id: str, opt_type: str) -> None:
            self.opts.put_nowait((event_id, opt_type))

        self.server.add_raw_event(VEN_ID, event, callback=on_opt)
        if startafter is not None:
            # add_raw_event rebuilds the active period from the intervals (dropping
            # a tolerance), so set it afterwards: it is rendered at the next poll.
            event.active_period = objects.ActivePeriod(
                dtstart=start, duration=duration, tolerance={"startafter": startafter})


@contextlib.asynccontextmanager
async def running_vtn(**kwargs: Any) -> AsyncIterator[Vtn]:
    vtn = Vtn(port=free_port(), **kwargs)
    await vtn.start()
    try:
        yield vtn
    finally:
        await vtn.stop()


@contextlib.asynccontextmanager
async def running_ven(config: OpenAdrConfig, bus: Bus) -> AsyncIterator[OpenAdrVen]:
    ven = OpenAdrVen(config, bus, "home", clock=FastClock())
    task = asyncio.create_task(ven.run(), name="test-ven")
    try:
        yield ven
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()  # run() ends only by cancellation


def plain_config(vtn: Vtn, **kw: Any) -> OpenAdrConfig:
    return OpenAdrConfig(vtn_url=vtn.url, ven_name="han", insecure_http=True, **kw)


async def next_event(sub: Any) -> DemandResponseEvent:
    async with asyncio.timeout(DEADLINE_S):
        ev: DemandResponseEvent = await sub.get()
        return ev


async def next_item(queue: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(DEADLINE_S):
        return await queue.get()


# ------------------------------------------------------------------- tests
async def test_an_event_reaches_the_bus_and_the_vtn_sees_the_opt_in() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn), bus) as ven:
        await until(lambda: ven.health().ok, "the VEN registers")
        assert ven.ven_id == VEN_ID and vtn.registrations == 1
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
        vtn.add_event(event_id="ev-1", level=2, start=start, duration=timedelta(minutes=45),
                      resources=("boiler",), startafter=timedelta(minutes=3))
        ev = await next_event(sub)
        assert (ev.event_id, ev.issuer, ev.source) == ("ev-1", VTN_ID, "openadr")
        assert (ev.start, ev.end) == (start, start + timedelta(minutes=45))
        assert (ev.level, ev.criticality) == (2, 5)
        assert ev.load_classes == ("boiler",)
        assert ev.randomize_start_s == 180.0
        assert not ev.cancelled
        assert await next_item(vtn.opts) == ("ev-1", "optIn")
        assert bus.dr_events["ev-1"] == ev


async def test_a_price_event_becomes_price_signals_one_per_interval() -> None:
    bus = Bus()
    prices = bus.subscribe(PriceSignal)
    events = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn), bus) as ven:
        await until(lambda: ven.health().ok, "the VEN registers")
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id="price-1", modification_number=0, market_context="oadr://han.test",
                event_status="far"),
            event_signals=[objects.EventSignal(
                intervals=[objects.Interval(dtstart=start, duration=timedelta(minutes=30),
                                            signal_payload=0.21),
                           objects.Interval(dtstart=start + timedelta(minutes=30),
                                            duration=timedelta(minutes=30), signal_payload=0.37)],
                signal_name="ELECTRICITY_PRICE", signal_type="price", signal_id="price-1-s",
                measurement=objects.Measurement(name="currencyPerKWh",
                                                description="currencyPerKWh", unit="USD",
                                                scale="none"))],
            targets=[objects.Target(ven_id=VEN_ID)],
        )
        opts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_opt(ven_id: str, event_id: str, opt_type: str) -> None:
            opts.put_nowait((event_id, opt_type))

        vtn.server.add_raw_event(VEN_ID, event, callback=on_opt)
        assert await next_item(opts) == ("price-1", "optIn")
        got = [await next_item_of(prices), await next_item_of(prices)]
        assert [(p.start, p.end, p.price_per_kwh, p.currency, p.source) for p in got] == [
            (start, start + timedelta(minutes=30), 0.21, "USD", "openadr"),
            (start + timedelta(minutes=30), start + timedelta(hours=1), 0.37, "USD", "openadr")]
        assert events.get_nowait() is None  # nothing to shed: no DR event
        assert ven.health().counters["prices"] == 2


async def next_item_of(sub: Any) -> Any:
    async with asyncio.timeout(DEADLINE_S):
        return await sub.get()


async def test_an_event_above_the_maximum_criticality_is_opted_out_of() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn, max_criticality=5), bus):
        vtn.add_event(event_id="ev-special", level=3)
        assert await next_item(vtn.opts) == ("ev-special", "optOut")
        # the VEN publishes before it answers, so by now it would have
        assert sub.get_nowait() is None and bus.dr_events == {}
        vtn.add_event(event_id="ev-high", level=2)
        assert await next_item(vtn.opts) == ("ev-high", "optIn")
        assert (await next_event(sub)).event_id == "ev-high"


async def test_a_cancellation_reaches_the_bus() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn), bus):
        vtn.add_event(event_id="ev-c", level=1)
        first = await next_event(sub)
        assert not first.cancelled and "ev-c" in bus.dr_events
        assert await next_item(vtn.opts) == ("ev-c", "optIn")
        vtn.server.cancel_event(VEN_ID, "ev-c")
        cancel = await next_event(sub)
        assert (cancel.event_id, cancel.cancelled) == ("ev-c", True)
        assert "ev-c" not in bus.dr_events


async def test_modifications_supersede_and_an_opt_out_withdraws_the_event() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn, max_criticality=5), bus):
        vtn.add_event(event_id="ev-m", level=2)
        first = await next_event(sub)
        assert (first.criticality, first.supersedes) == (5, ())

        def modify(level: float) -> None:
            # what a VTN does to change an event: new payload, next modificationNumber
            event = utils.find_by(vtn.server.events[VEN_ID], "event_descriptor.event_id", "ev-m")
            event.event_signals[0].intervals[0].signal_payload = level
            utils.increment_event_modification_number(event)
            vtn.server.events_updated[VEN_ID] = True

        modify(1)
        second = await next_event(sub)
        assert (second.event_id, second.criticality, second.supersedes) == ("ev-m", 3, ("ev-m",))
        assert bus.dr_events["ev-m"] == second
        modify(3)  # now above max_criticality: opted out, so withdrawn from the bus
        third = await next_event(sub)
        assert (third.event_id, third.cancelled) == ("ev-m", True)
        assert "ev-m" not in bus.dr_events


def dsmr_snapshot(meter: str) -> Snapshot:
    sim = DsmrSimulator("dsmr5", seed=7)
    now = datetime.now(UTC)
    sim.telegram(now - timedelta(seconds=1))
    frames = [e for e in DsmrDecoder().feed(sim.telegram(now)) if isinstance(e, MeterFrame)]
    frame = frames[0]
    return Snapshot(meter=meter, protocol="dsmr", device_id=frame.meter_id,
                    timestamp=frame.timestamp or now, received=now, readings=frame.readings)


async def test_the_vtn_receives_metered_data_from_the_last_snapshot() -> None:
    bus = Bus()
    snap = dsmr_snapshot("main")
    bus.publish(snap)
    power = snap.reading("1-0:1.7.0")
    assert power is not None and power.unit == "kW"
    expected = meter_values(snap)
    assert expected["power"] == pytest.approx(float(power.value) * 1000.0)
    async with running_vtn() as vtn, running_ven(
            plain_config(vtn, meter="main", report_interval_s=1), bus):
        seen: dict[str, float] = {}
        while len(seen) < 2:
            measurement, _at, value = await next_item(vtn.reports)
            seen[measurement] = value
            # refresh the snapshot so it never goes stale however slow the machine is
            bus.publish(Snapshot(meter="main", protocol=snap.protocol, device_id=snap.device_id,
                                 timestamp=snap.timestamp, received=datetime.now(UTC),
                                 readings=snap.readings))
        assert seen["RealPower"] == pytest.approx(expected["power"])
        assert seen["RealEnergy"] == pytest.approx(expected["energy"])


async def test_the_vtn_going_away_and_coming_back_is_survived() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    port = free_port()
    vtn = Vtn(port=port)
    await vtn.start()
    async with running_ven(plain_config(vtn, retry_cap_s=2.0), bus) as ven:
        try:
            await until(lambda: ven.health().counters["polls"] >= 1, "the VEN polls")
            await vtn.stop()
            await until(lambda: not ven.health().ok, "the VEN notices the outage")
            failed = ven.health()
            assert failed.counters["errors"] >= 1 and "no answer" in failed.detail
            assert "no answer from the VTN (" in failed.detail  # with openleadr's cause
            vtn = Vtn(port=port)  # a restarted VTN: same address, nothing remembered
            await vtn.start()
            await until(lambda: ven.health().ok, "the VEN registers again")
            assert ven.health().counters["registrations"] >= 2 and vtn.registrations == 1
            vtn.add_event(event_id="ev-after", level=1)
            ev = await next_event(sub)
            assert (ev.event_id, ev.criticality) == ("ev-after", 3)
            assert await next_item(vtn.opts) == ("ev-after", "optIn")
        finally:
            await vtn.stop()


async def test_a_refused_registration_is_retried_and_reported() -> None:
    bus = Bus()
    async with running_vtn() as vtn:
        refusals = 0

        def refuse(payload: dict[str, Any]) -> bool:
            nonlocal refusals
            refusals += 1
            return False

        vtn.server.add_handler("on_create_party_registration", refuse)
        async with running_ven(plain_config(vtn), bus) as ven:
            await until(lambda: refusals >= 2, "the VEN asks again")
            health = ven.health()
            assert not health.ok and health.detail == "registration refused by the VTN"
            assert health.counters["registrations"] == 0


async def test_a_test_event_is_answered_but_not_acted_on() -> None:
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn() as vtn, running_ven(plain_config(vtn), bus):
        vtn.add_event(event_id="ev-test", level=3)
        vtn.server.events[VEN_ID][-1].event_descriptor.test_event = True
        assert await next_item(vtn.opts) == ("ev-test", "optIn")
        assert sub.get_nowait() is None and bus.dr_events == {}


# --------------------------------------------------------------- mutual TLS
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a VTN certificate for 127.0.0.1 and a VEN client certificate."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("han test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, usage, san in (
            ("vtn", ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            ("ven", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("ven.han.test")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(who)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[f"{who}_cert"] = d / f"{who}.pem"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{who}_key"] = d / f"{who}.key"
        _write_key(out[f"{who}_key"], key)
    return out


def fingerprint(cert: Path) -> str:
    fp: str = utils.certificate_fingerprint(cert.read_text())
    return fp


async def test_mutual_tls_with_signed_messages(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    bus = Bus()
    sub = bus.subscribe(DemandResponseEvent)
    async with running_vtn(cert=pki["vtn_cert"], key=pki["vtn_key"], ca=pki["ca"],
                           ven_fingerprint=fingerprint(pki["ven_cert"])) as vtn:
        config = OpenAdrConfig(vtn_url=vtn.url, ven_name="han", cert_file=pki["ven_cert"],
                               key_file=pki["ven_key"], ca_file=pki["ca"],
                               vtn_fingerprint=fingerprint(pki["vtn_cert"]))
        async with running_ven(config, bus) as ven:
            await until(lambda: ven.health().ok, "the VEN registers over mutual TLS")
            vtn.add_event(event_id="ev-tls", level=3)
            ev = await next_event(sub)
            assert (ev.event_id, ev.criticality) == ("ev-tls", 7)
            assert await next_item(vtn.opts) == ("ev-tls", "optIn")


async def test_a_vtn_with_the_wrong_signing_certificate_is_not_believed(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")  # a certificate the VEN was not told about
    bus = Bus()
    async with running_vtn(cert=pki["vtn_cert"], key=pki["vtn_key"], ca=pki["ca"],
                           ven_fingerprint=fingerprint(pki["ven_cert"])) as vtn:
        config = OpenAdrConfig(vtn_url=vtn.url, ven_name="han", cert_file=pki["ven_cert"],
                               key_file=pki["ven_key"], ca_file=pki["ca"],
                               vtn_fingerprint=fingerprint(other["vtn_cert"]))
        async with running_ven(config, bus) as ven:
            await until(lambda: ven.health().counters["errors"] >= 2,
                        "the VEN refuses the VTN's answers more than once")
            health = ven.health()
            assert not health.ok and "failed validation" in health.detail
            assert health.counters["registrations"] == 0 and bus.dr_events == {}

