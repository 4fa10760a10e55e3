"""The virtual DLMS meter on a real pty (HDLC at 9600 Bd, and IEC 62056-21 mode E with
the 300 → 9600 Bd switch) and on TCP (wrapper), read by our DlmsReader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import MeterConfig
from gateway.errors import DecryptionError, RemoteProtocolError
from gateway.meters.dlms import DlmsReader
from gateway.protocols.dlms.client import Associated, Released
from gateway.sim.dlms import DlmsMeter, MeterOptions, serve_pty, serve_tcp
from gateway.transport import Transport, open_transport

pytestmark = pytest.mark.timeout(60)

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))


@contextlib.asynccontextmanager
async def pty_meter(meter: DlmsMeter, tmp_path: Path) -> AsyncIterator[str]:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_pty(meter, link=str(tmp_path / "dlms"),
                                         on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def tcp_meter(meter: DlmsMeter) -> AsyncIterator[str]:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_tcp(meter, "127.0.0.1", 0, on_ready=bound.set_result))
    try:
        yield f"socket://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reader_for(port: str, tmp_path: Path, **options: Any) -> DlmsReader:
    extra: dict[str, Any] = {}
    if options.pop("keys", False):
        (tmp_path / "k").write_text(EK.hex())
        (tmp_path / "a").write_text(AK.hex())
        (tmp_path / "k").chmod(0o600)
        (tmp_path / "a").chmod(0o600)
        extra = {"key_file": tmp_path / "k", "auth_key_file": tmp_path / "a"}
    cfg = MeterConfig(id="m", protocol="dlms", port=port, options=options, **extra)
    return DlmsReader(cfg)


async def one_poll(reader: DlmsReader, transport: Transport) -> Any:
    client = await reader._start_client(transport)
    await reader.drive(transport, client, client.associate(now=reader.clock.monotonic()), Associated)
    frame = await reader.poll(transport, client)
    await reader.drive(transport, client, client.release(now=reader.clock.monotonic()), Released)
    reader._ic = client.invocation_counter  # as the poll loop does: the next one goes on
    return frame


@pytest.mark.parametrize("mode_e", [False, True], ids=["hdlc", "mode-e"])
async def test_reader_on_a_pty(tmp_path: Path, mode_e: bool) -> None:
    meter = DlmsMeter(MeterOptions(mode_e=mode_e, authentication="lls", password=b"secret"))
    (tmp_path / "pw").write_text("secret\n")
    async with pty_meter(meter, tmp_path) as path:
        reader = reader_for(path, tmp_path, transport="mode-e" if mode_e else "hdlc",
                            authentication="lls", password_file=str(tmp_path / "pw"))
        transport = await open_transport(path, baudrate=9600)
        try:
            frame = await one_poll(reader, transport)
            # the meter goes back to 300 Bd after the DISC: a second session signs on again
            frame2 = await one_poll(reader, transport)
        finally:
            await transport.close()
    values = {r.id: r for r in frame.readings}
    assert values["1-0:1.8.0"].unit == "Wh" and values["1-0:32.7.0"].unit == "V"
    assert frame.meter_id == "HGW12345678"
    assert frame.timestamp is not None
    assert abs(frame.timestamp - datetime.now(UTC)) < timedelta(seconds=30)
    assert frame2.readings[0].value >= frame.readings[0].value


async def test_mode_e_with_a_meter_that_only_speaks_hdlc_times_out(tmp_path: Path) -> None:
    meter = DlmsMeter(MeterOptions(mode_e=False))
    async with pty_meter(meter, tmp_path) as path:
        reader = reader_for(path, tmp_path, transport="mode-e", timeout_s=1)
        transport = await open_transport(path, baudrate=9600)
        try:
            with pytest.raises(TimeoutError):
                await reader._start_client(transport)
        finally:
            await transport.close()


async def test_reader_over_tcp_with_hls_gmac_and_profile(tmp_path: Path) -> None:
    meter = DlmsMeter(MeterOptions(authentication="hls-gmac", key=EK, auth_key=AK,
                                   max_pdu_size=256))
    async with tcp_meter(meter) as url:
        reader = reader_for(url, tmp_path, keys=True, authentication="hls-gmac",
                            load_profile="1-0:99.1.0", load_profile_days=1)
        published: list[Any] = []
        reader.publish_frame = lambda frame, meter=None: published.append((meter, frame))  # type: ignore[method-assign]
        transport = await open_transport(url)
        try:
            client = await reader._start_client(transport)
            await reader.drive(transport, client, client.associate(now=reader.clock.monotonic()),
                               Associated)
            frame = await reader.poll(transport, client)
            count = await reader.fetch_profile(transport, client, frame.timestamp)
            again = await reader.fetch_profile(transport, client, frame.timestamp)
        finally:
            await transport.close()
    assert count == 96 and again == 0
    assert reader._blocks > 10
    rows = [f for m, f in published if m == "m-load-profile"]
    assert [r.timestamp for r in rows] == sorted(r.timestamp for r in rows)
    assert rows[-1].readings[0].id == "1-0:1.8.0"
    assert rows[-1].readings[0].value == meter.import_wh(rows[-1].timestamp)


async def test_wrong_keys_and_password_over_tcp(tmp_path: Path) -> None:
    meter = DlmsMeter(MeterOptions(authentication="hls-gmac", key=bytes(16), auth_key=AK))
    async with tcp_meter(meter) as url:
        reader = reader_for(url, tmp_path, keys=True, authentication="hls-gmac")
        transport = await open_transport(url)
        try:
            with pytest.raises(DecryptionError) as info:
                await one_poll(reader, transport)
            assert info.value.reason == "wrong_key"
        finally:
            await transport.close()
    meter = DlmsMeter(MeterOptions(authentication="lls", password=b"right"))
    (tmp_path / "pw").write_text("wrong")
    async with tcp_meter(meter) as url:
        reader = reader_for(url, tmp_path, authentication="lls", password_file=str(tmp_path / "pw"))
        transport = await open_transport(url)
        try:
            with pytest.raises(RemoteProtocolError, match="authentication failure"):
                await one_poll(reader, transport)
        finally:
            await transport.close()


async def test_reader_with_general_ded_ciphering_over_tcp(tmp_path: Path) -> None:
    """``ciphering = "general-ded"``: a fresh dedicated key in each AARQ, then every
    request and reply is general-ded-ciphered (DC) with it; the meter's global key alone
    does not open them."""
    from gateway.protocols.dlms.apdu import GeneralDedCiphering, decode_apdu
    from gateway.protocols.dlms.security import decipher_apdu

    meter = DlmsMeter(MeterOptions(authentication="hls-gmac", key=EK, auth_key=AK))
    async with tcp_meter(meter) as url:
        reader = reader_for(url, tmp_path, keys=True, authentication="hls-gmac",
                            ciphering="general-ded")
        transport = await open_transport(url)
        seen: list[bytes] = []
        read = transport.read

        async def recording_read(max_bytes: int = 4096) -> bytes:
            data = await read(max_bytes)
            seen.append(data)
            return data

        transport.read = recording_read  # type: ignore[method-assign]
        try:
            frame = await one_poll(reader, transport)
            frame2 = await one_poll(reader, transport)  # a second association, a new key
        finally:
            await transport.close()
    assert {r.id for r in frame.readings} >= {"1-0:1.8.0", "1-0:32.7.0"}
    assert frame2.readings[0].value >= frame.readings[0].value
    replies = [decode_apdu(d[8:]) for d in seen if len(d) > 8 and d[8] == 0xDC]
    assert len(replies) >= 6  # clock, device name, scaler_units, values
    assert all(isinstance(r, GeneralDedCiphering) for r in replies)
    with pytest.raises(DecryptionError):
        decipher_apdu(replies[0], key=EK, auth_key=AK)  # type: ignore[arg-type]
