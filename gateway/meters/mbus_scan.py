"""``han-gateway mbus scan``: find the slaves on a wired M-Bus.

:func:`scan` drives :meth:`MasterSession.scan_primary` (``SND_NKE`` to each primary
address 0..250, each slave found identified with ``REQ_UD2``) or
:meth:`MasterSession.scan_secondary` (wildcard search over the 8-digit ids, resolving
collisions digit by digit) over an open transport, and reports each step through
``progress``.  Timing follows the bus baud rate: an empty primary address costs one
reply window (330 bit times + 50 ms + margin, about 0.3 s at 2400 Bd), so a full
primary scan takes about 75 s and a secondary scan of a 250-meter bus several minutes,
hence the progress events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Literal

from gateway.clock import Clock, RealClock
from gateway.protocols.mbus.app import SecondaryAddress
from gateway.protocols.mbus.master import (
    Collision,
    DeviceFound,
    MasterEvent,
    MasterSession,
    ScanDone,
    ScanProgress,
    Send,
    SessionState,
    SetBaudrate,
)
from gateway.transport import Transport

__all__ = ["Collision", "DeviceFound", "ScanEvent", "ScanProgress", "scan"]

ScanEvent = ScanProgress | DeviceFound | Collision


async def scan(
    transport: Transport,
    *,
    mode: Literal["primary", "secondary"],
    progress: Callable[[ScanEvent], None] | None = None,
    baud: int = 2400,
    mask: SecondaryAddress | None = None,
    addresses: Sequence[int] = range(251),
    timeout_margin_s: float = 0.1,
    retries: int = 0,
    digits: str = "0123456789",
    clock: Clock | None = None,
) -> list[DeviceFound]:
    """Scan the bus behind ``transport``; returns the slaves found, in scan order.

    ``progress`` gets a :class:`ScanProgress` before every probe (``fraction`` of the
    address space done, probes sent, slaves found, the address or mask probed), a
    :class:`DeviceFound` for each slave and a :class:`Collision` for slaves that could
    not be told apart (two on one primary address; two sharing all 8 id digits).
    ``mask`` limits a secondary scan (``12FFFFFF``: ids starting with 12);
    ``addresses`` a primary one.  ``retries``: repeats of an unanswered probe.
    ``digits``: id digit values tried in a secondary scan (add ``ABCDE`` for meters
    with hex digits in their id).

    Raises:
        TransportError: the port failed.
        LocalProtocolError: a bad mask or address.
    """
    clock = clock or RealClock()
    master = MasterSession(baud=baud, timeout_margin_s=timeout_margin_s, scan_retries=retries)
    await transport.set_baudrate(baud)
    now = clock.monotonic()
    if mode == "primary":
        events = master.scan_primary(now=now, addresses=addresses)
    else:
        events = master.scan_secondary(now=now, mask=mask, digits=digits)
    found: list[DeviceFound] = []

    async def perform(items: Sequence[MasterEvent]) -> None:
        for ev in items:
            if isinstance(ev, Send):
                await transport.write(ev.data)
            elif isinstance(ev, SetBaudrate):
                await transport.set_baudrate(ev.baud)
            elif isinstance(ev, ScanDone):
                found.extend(ev.found)
            elif isinstance(ev, (ScanProgress, DeviceFound, Collision)) and progress is not None:
                progress(ev)

    await perform(events)
    while master.state is not SessionState.IDLE:
        deadline = master.deadline()
        timeout = None if deadline is None else max(deadline - clock.monotonic(), 0.0)
        try:
            async with asyncio.timeout(timeout):
                data = await transport.read()
        except TimeoutError:
            await perform(master.on_timeout(now=clock.monotonic()))
            continue
        await perform(master.feed(data, now=clock.monotonic()))
    return found
