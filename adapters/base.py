"""The interfaces every network adapter implements.

Adapters are found through the ``han_gateway.adapters`` entry point group, so
the core never imports a network library.  The supervisor builds an adapter
with ``factory(context)`` and then calls ``start``; the adapter's ``run`` lasts
until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gateway.bus import Bus
from gateway.model import LoadCommand, LoadState, OutboxItem


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    ok: bool
    detail: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)
    # the adapter's own task ended with an error (a bug): the supervisor restarts it
    crashed: bool = False


class Outbox(Protocol):
    """The durable queue of snapshots for one adapter (SQLite-backed in gateway.store).

    Rows are appended before anything is published and removed only by
    ``ack`` after the network confirmed them; so a crash at any point loses
    nothing that was appended (at-least-once delivery).
    """

    async def pending(self, *, after_id: int = 0, limit: int = 100) -> list[OutboxItem]: ...

    async def newest(self, *, limit: int = 1) -> list[OutboxItem]: ...

    async def ack(self, ids: list[int]) -> None: ...

    async def count(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterContext:
    gateway_id: str
    config: Mapping[str, Any]  # the adapter's validated config section
    outbox: Outbox
    meters: tuple[str, ...]  # configured meter ids
    secrets: Mapping[str, str] = field(default_factory=dict)
    started: datetime | None = None
    data_dir: Path | None = None  # the gateway's data folder (e.g. a ZigBee network database)


@runtime_checkable
class Adapter(Protocol):
    name: str

    async def start(self, bus: Bus) -> None:
        """Connect and begin work; returns once running (reconnects are internal)."""

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


@runtime_checkable
class Actuator(Adapter, Protocol):
    async def apply(self, cmd: LoadCommand) -> LoadState: ...


async def stop_task(task: asyncio.Task[None] | None, *, grace_s: float, what: str) -> None:
    """End an adapter's main task: give it ``grace_s`` to finish on its own (it was told
    to stop, e.g. to say goodbye to its peer), then cancel it; log how it had failed.

    A cancellation of the caller propagates, and cancels the task too: it is never
    left behind.
    """
    if task is None:
        return
    if not task.done():
        try:
            done, _ = await asyncio.wait({task}, timeout=grace_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error("%s task had failed: %r", what, task.exception())
