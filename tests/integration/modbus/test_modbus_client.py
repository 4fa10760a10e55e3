"""Our client actuator switching loads on independent servers: a pymodbus server and a
server built on Debian's libmodbus; reconnects, timeouts and refusals."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.bus import LoadFeedback
from gateway.errors import AdapterError
from gateway.model import LoadAction, LoadCommand

pytestmark = pytest.mark.timeout(120)


def cmd(actuator: str, action: LoadAction, limit_w: float | None = None) -> LoadCommand:
    return LoadCommand(load="heater", action=action, reason="test", rule="r1",
                       actuator=actuator, limit_w=limit_w, issued=datetime.now(UTC))


async def test_coil_on_pymodbus_server(modbus_adapter: Any, pymodbus_peer: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="")
    actuator = f"modbus:127.0.0.1:{pymodbus_peer.port}/1/coil:5"
    state = await adapter.apply(cmd(actuator, LoadAction.RESTORE))
    assert state.on and state.load == "heater" and state.rule == "r1"
    assert await pymodbus_peer.read("c", 5) == 1
    assert await pymodbus_peer.read("c", 4) == 0  # only the named coil is written
    state = await adapter.apply(cmd(actuator, LoadAction.SHED))
    assert not state.on
    assert await pymodbus_peer.read("c", 5) == 0
    # LIMIT on an address without a limit register: off, and the state says why
    await adapter.apply(cmd(actuator, LoadAction.RESTORE))
    state = await adapter.apply(cmd(actuator, LoadAction.LIMIT, limit_w=1000))
    assert not state.on and "off" in state.reason
    assert await pymodbus_peer.read("c", 5) == 0
    assert adapter.health().counters["commands"] == 4


async def test_holding_register_with_limit_on_pymodbus_server(modbus_adapter: Any,
                                                              pymodbus_peer: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="")
    actuator = f"modbus:127.0.0.1:{pymodbus_peer.port}/3/hr:10=0x2,7/limit:11*0.1=320"
    state = await adapter.apply(cmd(actuator, LoadAction.LIMIT, limit_w=2300))
    assert state.on and state.limit_w == 2300
    assert await pymodbus_peer.read("h", 11) == 230
    assert await pymodbus_peer.read("h", 10) == 2
    state = await adapter.apply(cmd(actuator, LoadAction.SHED))
    assert not state.on and state.limit_w is None
    assert await pymodbus_peer.read("h", 10) == 7
    assert await pymodbus_peer.read("h", 11) == 230  # SHED leaves the limit alone
    state = await adapter.apply(cmd(actuator, LoadAction.RESTORE))
    assert state.on
    assert await pymodbus_peer.read("h", 11) == 320  # RESTORE writes the "no limit" value
    assert await pymodbus_peer.read("h", 12) == 1012  # untouched


async def test_coil_and_register_on_libmodbus_server(modbus_adapter: Any,
                                                     libmodbus_server: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="")
    port = libmodbus_server.port
    state = await adapter.apply(cmd(f"modbus:127.0.0.1:{port}/1/coil:3", LoadAction.RESTORE))
    assert state.on
    state = await adapter.apply(cmd(f"modbus:127.0.0.1:{port}/1/coil:3", LoadAction.SHED))
    assert not state.on
    state = await adapter.apply(cmd(f"modbus:localhost:{port}/1/hr:20=1,0", LoadAction.RESTORE))
    assert state.on
    deadline = asyncio.get_running_loop().time() + 5
    while len(libmodbus_server.writes()) < 3:
        assert asyncio.get_running_loop().time() < deadline, libmodbus_server.lines
        await asyncio.sleep(0.02)
    # FC 5 (write coil) at 3 on (0xFF00) and off, then FC 6 (write register) 20 = 1:
    # nothing else written
    assert libmodbus_server.writes() == ["write 5 3 65280", "write 5 3 0", "write 6 20 1"]


async def test_exception_from_device_is_an_adapter_error(modbus_adapter: Any,
                                                         libmodbus_server: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="")
    with pytest.raises(AdapterError, match="exception code 2"):
        await adapter.apply(cmd(f"modbus:127.0.0.1:{libmodbus_server.port}/1/coil:500",
                                LoadAction.SHED))
    assert adapter.health().counters["command_errors"] == 1


async def test_unreachable_device_then_reconnect(modbus_adapter: Any, mbt: Any,
                                                 pymodbus_peer: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="", client_timeout_s=0.5,
                                                client_retries=0)
    dead = mbt.free_port()
    with pytest.raises(AdapterError, match="cannot connect"):
        await adapter.apply(cmd(f"modbus:127.0.0.1:{dead}/1/coil:1", LoadAction.SHED))
    # a server that accepts but never answers: the request times out
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with pytest.raises(AdapterError):
            await adapter.apply(cmd(f"modbus:127.0.0.1:{silent.getsockname()[1]}/1/coil:1",
                                    LoadAction.SHED))
    finally:
        silent.close()
    # the peer restarts: the next command opens a new connection
    actuator = f"modbus:127.0.0.1:{pymodbus_peer.port}/1/coil:2"
    assert (await adapter.apply(cmd(actuator, LoadAction.RESTORE))).on
    await pymodbus_peer.server.shutdown()
    with pytest.raises(AdapterError):
        await adapter.apply(cmd(actuator, LoadAction.SHED))
    await pymodbus_peer.server.serve_forever(background=True)
    assert not (await adapter.apply(cmd(actuator, LoadAction.SHED))).on
    assert await pymodbus_peer.read("c", 2) == 0


async def test_bad_address_is_not_retryable(modbus_adapter: Any) -> None:
    adapter, _bus, _port = await modbus_adapter(listen="")
    with pytest.raises(AdapterError) as info:
        await adapter.apply(cmd("modbus:127.0.0.1/1/hr:5", LoadAction.SHED))
    assert info.value.retryable is False


async def test_feedback_when_the_device_changes_by_itself(modbus_adapter: Any,
                                                          pymodbus_peer: Any) -> None:
    adapter, bus, _port = await modbus_adapter(listen="", feedback_interval_s=0.05)
    feedback = bus.subscribe(LoadFeedback)
    actuator = f"modbus:127.0.0.1:{pymodbus_peer.port}/1/coil:9"
    await adapter.apply(cmd(actuator, LoadAction.SHED))
    # someone switches the relay on at the device
    await pymodbus_peer.server.context.async_setValues(0, 5, 9, [True])
    async with asyncio.timeout(10):
        fb = await feedback.get()
    assert fb.actuator == actuator and fb.on is True
