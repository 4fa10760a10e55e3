"""The independent peer issue 3 asks for: dlms-cosem's client (a test-only dependency,
21.3.2, the last MIT release) reads our virtual DLMS meter over the TCP wrapper:
association, clock, a register (scaler_unit then value), a load profile (whole, in
blocks, and by range), with no security, LLS, and HLS-GMAC with ciphering.  The blocking
client runs in a thread against the asyncio simulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.protocols.dlms import axdr
from gateway.protocols.dlms.axdr import CosemDateTime
from gateway.sim.dlms import DlmsMeter, MeterOptions, serve_tcp

dlms_cosem = pytest.importorskip("dlms_cosem")

from dlms_cosem import cosem, enumerations
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.cosem.selective_access import CaptureObject, RangeDescriptor

pytestmark = pytest.mark.timeout(60)

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
FROZEN = datetime(2024, 6, 3, 12, 7, 30, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running(meter: DlmsMeter) -> AsyncIterator[int]:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_tcp(meter, "127.0.0.1", 0, on_ready=bound.set_result))
    try:
        yield await asyncio.wait_for(bound, 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def attribute(interface: enumerations.CosemInterface, obis: str, attr: int) -> Any:
    return cosem.CosemAttribute(interface=interface, instance=cosem.Obis.from_string(obis),
                                attribute=attr)


def read_everything(client: DlmsClient, *, with_range: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with client.session() as c:
        out["clock"] = c.get(attribute(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2))
        out["scaler_unit"] = c.get(attribute(enumerations.CosemInterface.REGISTER, "1.0.1.8.0.255", 3))
        out["energy"] = c.get(attribute(enumerations.CosemInterface.REGISTER, "1.0.1.8.0.255", 2))
        out["ldn"] = c.get(attribute(enumerations.CosemInterface.DATA, "0.0.42.0.0.255", 2))
        profile = attribute(enumerations.CosemInterface.PROFILE_GENERIC, "1.0.99.1.0.255", 2)
        out["profile"] = c.get(profile)
        if with_range:
            rng = RangeDescriptor(
                restricting_object=CaptureObject(
                    cosem_attribute=attribute(enumerations.CosemInterface.CLOCK, "0.0.1.0.0.255", 2)),
                from_value=FROZEN - timedelta(hours=2),
                to_value=FROZEN - timedelta(hours=1),
            )
            out["range"] = c.get(profile, access_descriptor=rng)
    return out


def check(out: dict[str, Any], meter: DlmsMeter, *, with_range: bool) -> None:
    clock = axdr.decode_data(out["clock"])
    assert CosemDateTime.decode(clock.value).to_datetime() == FROZEN  # type: ignore[arg-type]
    assert axdr.decode_data(out["scaler_unit"]) == axdr.structure(axdr.integer(0), axdr.enum(30))
    assert axdr.decode_data(out["energy"]).value == meter.import_wh()
    assert axdr.decode_data(out["ldn"]).value == b"HGW12345678"
    profile = axdr.decode_data(out["profile"])
    assert len(profile.items) == 96 * meter.options.profile_days
    if with_range:
        rows = axdr.decode_data(out["range"]).items
        times = [CosemDateTime.decode(r.items[0].value).to_datetime() for r in rows]  # type: ignore[arg-type]
        start = FROZEN.replace(minute=0, second=0) - timedelta(hours=1)
        assert times == [start - timedelta(minutes=60 - 15 * i) for i in range(1, 5)]
        assert [r.items[1].value for r in rows] == [
            meter.import_wh(t) for t in times  # type: ignore[arg-type]
        ]


async def test_dlms_cosem_reads_the_virtual_meter_without_security() -> None:
    meter = DlmsMeter(MeterOptions(max_pdu_size=512), now=lambda: FROZEN)
    async with running(meter) as port:
        client = DlmsClient.with_tcp_transport(host="127.0.0.1", port=port,
                                               client_logical_address=16,
                                               server_logical_address=1, timeout=5)
        out = await asyncio.to_thread(read_everything, client, with_range=True)
    check(out, meter, with_range=True)


async def test_dlms_cosem_reads_with_lls() -> None:
    meter = DlmsMeter(MeterOptions(authentication="lls", password=b"00000001"),
                      now=lambda: FROZEN)
    async with running(meter) as port:
        client = DlmsClient.with_tcp_transport(
            host="127.0.0.1", port=port, client_logical_address=16, server_logical_address=1,
            authentication_method=enumerations.AuthenticationMechanism.LLS,
            password=b"00000001", timeout=5)
        out = await asyncio.to_thread(read_everything, client, with_range=False)
    check(out, meter, with_range=False)


async def test_dlms_cosem_reads_with_hls_gmac_and_ciphering() -> None:
    meter = DlmsMeter(MeterOptions(authentication="hls-gmac", key=EK, auth_key=AK),
                      now=lambda: FROZEN)
    async with running(meter) as port:
        client = DlmsClient.with_tcp_transport(
            host="127.0.0.1", port=port, client_logical_address=1, server_logical_address=1,
            authentication_method=enumerations.AuthenticationMechanism.HLS_GMAC,
            encryption_key=EK, authentication_key=AK,
            client_system_title=b"DLMSCOSE", client_initial_invocation_counter=1, timeout=5)
        out = await asyncio.to_thread(read_everything, client, with_range=False)
    check(out, meter, with_range=False)
