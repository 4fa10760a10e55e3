"""The KNX adapter against knxd (Debian) with a dummy bus, in a private network namespace.

knxd's own ``knxtool groupsocketlisten`` is the oracle for what reaches the
bus; expected payloads are packed here with ``struct`` (DPT 14 = IEEE 754
float32, DPT 13 = int32, DPT 5/20 = one octet), not with xknx.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from xknx import XKNX
from xknx.dpt.payload import DPTBinary
from xknx.io import ConnectionConfig, ConnectionType, SecureConfig
from xknx.telegram import GroupAddress, Telegram
from xknx.telegram.apci import GroupValueWrite

from adapters.knx import ConnectionState, KnxAdapter, KnxConfig, plaintext_warning
from gateway.bus import Bus, LoadFeedback
from gateway.errors import AdapterError
from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    PriceSignal,
    Reading,
    Snapshot,
)

pytestmark = pytest.mark.timeout(240)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

EXPOSURES: list[dict[str, Any]] = [
    {"value": "power_import", "group_address": "1/1/1", "dpt": "14.056", "deadband": 10},
    {"value": "energy_import", "group_address": "1/1/2", "dpt": "13.013"},
    {"value": "voltage_l1", "group_address": "1/1/3", "dpt": "14.027"},
    {"value": "current_l1", "group_address": "1/1/4", "dpt": "14.019"},
    {"value": "price", "group_address": "1/1/5", "dpt": "9"},
    {"value": "tariff", "group_address": "1/1/6", "dpt": "5.006"},
    {"value": "dr_level", "group_address": "1/1/7", "dpt": "20"},
    {"value": "power_import", "group_address": "1/1/8", "dpt": "14.056", "meter": "other"},
]


def f32(x: float) -> bytes:
    return struct.pack(">f", x)


def snapshot(power_kw: float, *, voltage: float = 230.1, energy_kwh: float = 12345.678,
             meter: str = "main") -> Snapshot:
    return Snapshot(
        meter=meter, protocol="dsmr", device_id="E1", timestamp=NOW, received=NOW,
        readings=(
            Reading(id="1-0:1.7.0", value=power_kw, unit="kW"),
            Reading(id="1-0:1.8.0", value=energy_kwh, unit="kWh"),
            Reading(id="1-0:32.7.0", value=voltage, unit="V"),
            Reading(id="1-0:31.7.0", value=5, unit="A"),
            Reading(id="0-0:96.14.0", value="0002"),
        ),
    )


def make_adapter(**cfg: Any) -> KnxAdapter:
    return KnxAdapter(gateway_id="t", config=KnxConfig.model_validate(cfg), meters=("main",))


async def until(cond: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def exercise(adapter: KnxAdapter, knxd: Any, source: str | None) -> None:
    """Values, deadband, reads, refused writes, a load switched and confirmed."""
    listen = knxd.listen()
    bus = Bus()
    feedback = bus.subscribe(LoadFeedback)
    await adapter.start(bus)
    try:
        await until(lambda: adapter.state is ConnectionState.CONNECTED, "connected")
        ours = (lambda ln: ln.source == source) if source else (lambda ln: True)

        bus.publish(snapshot(1.234))
        expect = {
            "1/1/1": f32(1234.0),  # 1.234 kW as DPT 14.056 W
            "1/1/2": struct.pack(">i", 12345),  # DPT 13.013 whole kWh (xknx truncates, as a register shows)
            "1/1/3": f32(230.1),
            "1/1/4": f32(5.0),
            "1/1/6": bytes([2]),  # DSMR tariff indicator "0002" as DPT 5.006
        }
        for ga, data in expect.items():
            line = await listen.await_for(lambda ln, g=ga: ln.kind == "Write" and ln.group == g)
            assert line.data == data, (ga, line)
            assert ours(line), line
        source = source or listen.writes("1/1/1")[0].source

        bus.publish(PriceSignal(start=NOW, end=NOW + timedelta(hours=1), price_per_kwh=0.25))
        line = await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/5")
        assert line.data == bytes([0x00, 0x19])  # DPT 9: 0.01 * 25 * 2^0

        now = datetime.now(UTC)
        bus.publish(DemandResponseEvent(event_id="e1", start=now - timedelta(minutes=1),
                                        end=now + timedelta(hours=1), level=3))
        # level 0 went out at start (no event in force); now 3, as one octet (DPT 20)
        assert listen.writes("1/1/7")[0].data == bytes([0])
        await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/7"
                               and ln.data == bytes([3]))

        # inside the deadband (10 W): not sent, but a read is answered with it
        mark = len(listen.lines)
        bus.publish(snapshot(1.240))
        bus.publish(snapshot(1.240, voltage=231.0))
        await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/3", after=mark)
        assert [ln for ln in listen.lines[mark:] if ln.group == "1/1/1"] == []
        mark = len(listen.lines)
        await asyncio.to_thread(knxd.groupread, "1/1/1")
        line = await listen.await_for(lambda ln: ln.kind == "Response" and ln.group == "1/1/1",
                                      after=mark)
        assert line.data == f32(1240.0) and line.source == source
        # outside it: sent
        bus.publish(snapshot(1.300))
        line = await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/1"
                                      and ln.data == f32(1300.0), after=mark)

        # another device writes to an exposed address: ignored, reads still say 1300 W
        await asyncio.to_thread(knxd.groupwrite, "1/1/1", 0, 0, 0, 0)
        await until(lambda: adapter.health().counters["refused_writes"] == 1, "refused write")
        mark = len(listen.lines)
        await asyncio.to_thread(knxd.groupread, "1/1/1")
        line = await listen.await_for(lambda ln: ln.kind == "Response" and ln.group == "1/1/1",
                                      after=mark)
        assert line.data == f32(1300.0)

        # a load: DPT 1.001 off on 2/0/1, confirmed through 2/0/2
        actuator = "knx:2/0/1?status=2/0/2"
        state = await adapter.apply(LoadCommand(load="boiler", action=LoadAction.SHED,
                                                reason="peak", actuator=actuator))
        assert state.on is False and state.load == "boiler"
        line = await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "2/0/1")
        assert line.data == bytes([0]) and line.source == source
        await asyncio.to_thread(knxd.groupswrite, "2/0/2", 0)
        fb = await asyncio.wait_for(feedback.get(), 10)
        assert fb.actuator == actuator and fb.on is False
        await adapter.apply(LoadCommand(load="boiler", action=LoadAction.RESTORE, reason="ok",
                                        actuator=actuator))
        line = await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "2/0/1"
                                      and ln.data == bytes([1]))
        await asyncio.to_thread(knxd.groupswrite, "2/0/2", 1)
        fb = await asyncio.wait_for(feedback.get(), 10)
        assert fb.on is True

        # an exposure tied to another meter takes only that meter's value
        assert listen.writes("1/1/8") == []
        bus.publish(snapshot(0.5, meter="other"))
        line = await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/8")
        assert line.data == f32(500.0)

        # a LIMIT a switch cannot do is refused, and nothing is written for it
        with pytest.raises(AdapterError):
            await adapter.apply(LoadCommand(load="heater", action=LoadAction.LIMIT, limit_w=1000,
                                            reason="x", actuator="knx:2/0/9"))

        # we only ever wrote the exposed addresses and the commanded switch
        written = {ln.group for ln in listen.lines if ln.kind == "Write" and ln.source == source}
        assert written == {"1/1/1", "1/1/2", "1/1/3", "1/1/4", "1/1/5", "1/1/6", "1/1/7", "1/1/8",
                           "2/0/1"}
        health = adapter.health()
        assert health.ok and health.counters["commands"] == 2
        assert health.counters["suppressed"] >= 1 and health.counters["responses"] >= 2
    finally:
        await adapter.stop()
        feedback.close()
    assert adapter.state is ConnectionState.STOPPED


def test_tunnelling_udp(knx_ns: Any, knxd_factory: Any) -> None:
    knxd = knxd_factory()
    adapter = knx_ns.call(make_adapter, connection="tunnelling", gateway_host="127.0.0.1",
                          local_ip="127.0.0.1", exposure=EXPOSURES)
    knx_ns.run(exercise, adapter, knxd, None)


def test_routing(knx_ns: Any, knxd_factory: Any) -> None:
    knxd = knxd_factory(routing=True)
    adapter = knx_ns.call(make_adapter, connection="routing", local_ip="127.0.0.1",
                          individual_address="1.1.250", exposure=EXPOSURES)
    knx_ns.run(exercise, adapter, knxd, "1.1.250")


def test_min_interval_and_periodic(knx_ns: Any, knxd_factory: Any) -> None:
    """min_interval_s: values arriving within it are not sent, the newest goes out when
    it ends; periodic_s: the current value is repeated without new snapshots."""
    knxd = knxd_factory()

    async def scenario() -> None:
        adapter = make_adapter(connection="tunnelling", gateway_host="127.0.0.1",
                               local_ip="127.0.0.1", exposure=[
                                   {"value": "power_import", "group_address": "1/1/1",
                                    "dpt": "14.056", "min_interval_s": 1.0},
                                   {"value": "voltage_l1", "group_address": "1/1/3",
                                    "dpt": "14.027", "periodic_s": 0.3}])
        listen = knxd.listen()
        bus = Bus()
        await adapter.start(bus)
        try:
            await until(lambda: adapter.state is ConnectionState.CONNECTED, "connected")
            bus.publish(snapshot(1.0))
            await listen.await_for(lambda ln: ln.group == "1/1/1" and ln.data == f32(1000.0))
            bus.publish(snapshot(2.0))
            bus.publish(snapshot(3.0))
            await listen.await_for(lambda ln: ln.group == "1/1/1" and ln.data == f32(3000.0))
            assert [ln.data for ln in listen.writes("1/1/1")] == [f32(1000.0), f32(3000.0)]
            # the voltage was published three times with the same value, and is repeated
            await listen.await_for(lambda ln: len(listen.writes("1/1/3")) >= 4)
            assert {ln.data for ln in listen.writes("1/1/3")} == {f32(230.1)}
        finally:
            await adapter.stop()

    knx_ns.run(scenario)


def test_tunnelling_tcp_is_not_offered_by_knxd_and_failure_stays_contained(
        knx_ns: Any, knxd_factory: Any) -> None:
    """knxd 0.14 has no KNXnet/IP TCP tunnelling: the adapter keeps retrying, says why in
    its health, refuses commands as retryable, and stops promptly; the bus keeps working."""
    knxd_factory()

    async def scenario() -> None:
        adapter = make_adapter(connection="tunnelling_tcp", gateway_host="127.0.0.1",
                               reconnect_min_s=0.1, reconnect_max_s=0.2, exposure=EXPOSURES[:1])
        bus = Bus()
        other = bus.subscribe(Snapshot)
        await adapter.start(bus)
        await until(lambda: adapter.health().counters["connect_failures"] >= 2, "retries")
        health = adapter.health()
        assert not health.ok and "cannot connect" in health.detail
        bus.publish(snapshot(1.0))
        assert (await asyncio.wait_for(other.get(), 5)).meter == "main"
        with pytest.raises(AdapterError) as err:
            await adapter.apply(LoadCommand(load="x", action=LoadAction.SHED, reason="r",
                                            actuator="knx:2/0/1"))
        assert err.value.retryable
        await asyncio.wait_for(adapter.stop(), 15)
        assert adapter.state is ConnectionState.STOPPED

    knx_ns.run(scenario)


def test_reconnects_after_knxd_restart(knx_ns: Any, knxd_factory: Any) -> None:
    knxd = knxd_factory()

    async def scenario() -> None:
        adapter = make_adapter(connection="tunnelling", gateway_host="127.0.0.1",
                               local_ip="127.0.0.1", reconnect_min_s=0.2, reconnect_max_s=1,
                               exposure=EXPOSURES[:1])
        bus = Bus()
        await adapter.start(bus)
        try:
            await until(lambda: adapter.state is ConnectionState.CONNECTED, "connected")
            listen = knxd.listen()
            bus.publish(snapshot(1.0))
            await listen.await_for(lambda ln: ln.group == "1/1/1" and ln.data == f32(1000.0))
            await asyncio.to_thread(knxd.kill)
            await asyncio.to_thread(knxd.start)
            listen = knxd.listen()
            # the next value finds the tunnel gone: xknx reports the loss, we reconnect
            # and send the current value again
            bus.publish(snapshot(2.0))
            await listen.await_for(lambda ln: ln.kind == "Write" and ln.group == "1/1/1"
                                   and ln.data == f32(2000.0), timeout=60)
            await until(lambda: adapter.state is ConnectionState.CONNECTED, "reconnected")
            counters = adapter.health().counters
            assert counters["disconnects"] >= 1 and counters["connects"] >= 2
        finally:
            await adapter.stop()

    knx_ns.run(scenario, timeout=150)


# ------------------------------------------------------------- KNX IP Secure
# KNX IP Secure: keyring loading, secure TCP tunnelling set-up, secure routing on the wire.
#
# knxd 0.14 has no KNX IP Secure (and no KNXnet/IP TCP tunnelling), so no
# independent peer can complete a secure session here.  What is tested:
# the keyring (an ETS-style .knxkeys written by the test) is loaded with the
# password from a file, its signature checked, and its tunnel credentials are
# what xknx uses (a tunnel address missing from it is refused before any TCP
# connection); a wrong password is refused without the password appearing in
# logs or health; and with a backbone key, routing goes out encrypted: knxd,
# a plaintext peer, never sees the value, while an xknx instance holding the
# same keyring decrypts it.

PASSWORD = "correct horse battery staple"


def secure_adapter(keyring: Path, password_file: Path, **cfg: Any) -> KnxAdapter:
    config = KnxConfig.model_validate({
        "keyring": str(keyring), "keyring_password_file": str(password_file),
        "reconnect_min_s": 0.1, "reconnect_max_s": 0.3,
        "exposure": [{"value": "power_import", "group_address": "1/1/1", "dpt": "14.056"}],
        **cfg,
    })
    assert plaintext_warning(config) is None
    return KnxAdapter(gateway_id="t", config=config)


async def failing_until(adapter: KnxAdapter, text: str) -> str:
    bus = Bus()
    await adapter.start(bus)
    try:
        await until(lambda: text in adapter.health().detail, f"{text!r} in health")
        assert not adapter.health().ok
        return adapter.health().detail
    finally:
        await adapter.stop()


def test_secure_tunnel_uses_the_keyring(knx_ns: Any, knxd_factory: Any, knxkeys: Any,
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    knxd_factory()
    keyring = knxkeys(tmp_path / "home.knxkeys", PASSWORD, tunnel="1.1.5")
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o600)
    caplog.set_level(logging.DEBUG)

    # the keyring's tunnel 1.1.5: credentials found, then the TCP connection is refused
    ok = knx_ns.call(secure_adapter, keyring, pw_file, connection="tunnelling_tcp",
                     gateway_host="127.0.0.1", individual_address="1.1.5")
    detail = knx_ns.run(failing_until, ok, "cannot connect")
    assert "keyring" not in detail and ok.state is not ConnectionState.KEYRING_REFUSED

    # a tunnel the keyring does not hold: refused by the keyring lookup
    missing = knx_ns.call(secure_adapter, keyring, pw_file, connection="tunnelling_tcp",
                          gateway_host="127.0.0.1", individual_address="1.1.9")
    assert "not found in keyfile" in knx_ns.run(failing_until, missing, "not found")

    # a wrong password: the signature check fails; the password is never shown
    bad_file = tmp_path / "bad"
    bad_file.write_text("hunter2-wrong\n")
    bad = knx_ns.call(secure_adapter, keyring, bad_file, connection="tunnelling_tcp",
                      gateway_host="127.0.0.1", individual_address="1.1.5")
    detail = knx_ns.run(failing_until, bad, "Signature verification")
    assert bad.state in (ConnectionState.KEYRING_REFUSED, ConnectionState.STOPPED)
    for secret in ("hunter2-wrong", PASSWORD, "tunnel-secret"):
        assert secret not in caplog.text and secret not in detail


def test_secure_routing_is_encrypted_on_the_wire(knx_ns: Any, knxd_factory: Any, knxkeys: Any,
                                                 tmp_path: Path) -> None:
    knxd = knxd_factory(routing=True)
    backbone = bytes(range(0x10, 0x20))
    keyring = knxkeys(tmp_path / "bb.knxkeys", PASSWORD, tunnel=None, backbone_key=backbone)
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD)

    async def scenario() -> None:
        listen = knxd.listen()
        got: asyncio.Queue[Telegram] = asyncio.Queue()
        peer = XKNX(connection_config=ConnectionConfig(
            connection_type=ConnectionType.ROUTING_SECURE, local_ip="127.0.0.1",
            individual_address="1.1.251", secure_config=SecureConfig(backbone_key=backbone.hex())))
        peer.telegram_queue.register_telegram_received_cb(got.put_nowait)
        plain = XKNX(connection_config=ConnectionConfig(
            connection_type=ConnectionType.ROUTING, local_ip="127.0.0.1",
            individual_address="1.1.252"))
        adapter = secure_adapter(keyring, pw_file, connection="routing", local_ip="127.0.0.1",
                                 individual_address="1.1.250")
        bus = Bus()
        await peer.start()
        await plain.start()
        await adapter.start(bus)
        try:
            await until(lambda: adapter.state is ConnectionState.CONNECTED, "connected")
            bus.publish(snapshot(1.5))
            while True:
                tg = await asyncio.wait_for(got.get(), 20)
                if tg.destination_address == GroupAddress("1/1/1"):
                    break
            assert isinstance(tg.payload, GroupValueWrite)
            assert bytes(tg.payload.value.value) == struct.pack(">f", 1500.0)  # type: ignore[arg-type]
            assert str(tg.source_address) == "1.1.250"
            # a plaintext marker sent after it reaches knxd; the secure value never did
            await plain.telegrams.put(Telegram(destination_address=GroupAddress("3/0/0"),
                                               payload=GroupValueWrite(DPTBinary(1))))
            await listen.await_for(lambda ln: ln.group == "3/0/0")
            assert listen.writes("1/1/1") == []
        finally:
            await adapter.stop()
            await plain.stop()
            await peer.stop()

    knx_ns.run(scenario)

