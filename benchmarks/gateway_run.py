"""End-to-end scenarios through a real gateway process and a real mosquitto.

* latency: from the last byte of a telegram written to the pty to the state
  message at a subscriber (p50, p99).  Baseline in the same run: a plain paho
  client publishing a payload of the same size to the same broker and the same
  subscriber (what any MQTT hop costs here), interleaved sample by sample;
* throughput: sustained telegrams per second into MQTT from many simulated P1
  streams over TCP, the gateway pinned to one core (everything else, mosquitto,
  the simulated meters and the subscriber, to the other cores).  A telegram
  counts as delivered when its snapshot reaches the subscriber, as live state
  or as history;
* resources: CPU share and RSS of the daemon at one telegram per second.
  Baseline in the same run: a second gateway, same config, whose meter is
  silent (what an idle daemon costs).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.common import (
    median,
    mosquitto,
    percentile,
    proc_cpu_seconds,
    proc_cpu_split,
    proc_rss_mb,
)
from gateway.model import MeterFrame, Snapshot

GATEWAY_CPU = 0


class Collector:
    """A paho subscriber in its own thread, recording arrival times per topic."""

    def __init__(self, port: int, *topics: str, keep: bool = True, unique: bool = False) -> None:
        self.arrivals: list[tuple[float, str, bytes]] = []
        self.count = 0
        # distinct snapshots (meter, device and timestamp open the JSON), when asked
        self.unique: set[bytes] | None = set() if unique else None
        self.by_suffix: dict[str, int] = {}
        self.event = threading.Event()
        self.keep = keep
        # (arrival, value, self.count then) of each $SYS counter message
        self.sys: list[tuple[float, float, int]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        for topic in topics:
            self.c.subscribe(topic, qos=1)
        self.c.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if msg.topic.startswith("$SYS/"):
            with suppress(ValueError):
                self.sys.append((now, float(msg.payload), self.count))
            return
        if msg.retain:  # a retained message from before we subscribed
            return
        self.count += 1
        payload = bytes(msg.payload)
        if self.unique is not None:
            self.unique.add(payload[:160])
        suffix = msg.topic.rsplit("/", 1)[-1]
        self.by_suffix[suffix] = self.by_suffix.get(suffix, 0) + 1
        if self.keep:
            self.arrivals.append((now, msg.topic, payload))
        self.event.set()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run this process (and the children it starts meanwhile) on ``cpus``."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def other_cpus() -> set[int] | None:
    """The cores left for everything but the gateway (None: only one core)."""
    rest = os.sched_getaffinity(0) - {GATEWAY_CPU}
    return rest or None


@contextmanager
def gateway_process(config: str, *, cpu: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gateway.toml"
        path.write_text(config.replace("@DATA@", d))
        exe = Path(sys.executable).with_name("han-gateway")
        log = (Path(d) / "gateway.log").open("wb")
        proc = subprocess.Popen([str(exe), "--log-level", "warning", "run", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=log)
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        proc.data_dir = Path(d)  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            errors = (Path(d) / "gateway.log").read_text(errors="replace").strip()
            if errors:
                print(f"gateway log (warnings and errors):\n{errors[-2000:]}", file=sys.stderr)


def outbox_rows(proc: subprocess.Popen[bytes]) -> int | None:
    """Rows queued in the running gateway's outbox (a read-only WAL reader)."""
    db = proc.data_dir / "gateway.sqlite3"  # type: ignore[attr-defined]
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0) as c:
            return int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return None


def _config(port: int, meters: list[tuple[str, str]], *, gateway: str = "bench",
            discovery: bool = False, mqtt_extra: str = "") -> str:
    out = [f'[gateway]\nid = "{gateway}"\ndata_dir = "@DATA@"\n']
    for mid, url in meters:
        out.append(f'[[meter]]\nid = "{mid}"\nprotocol = "dsmr"\nport = "{url}"\nstale_after_s = 600\n')
    out.append(f'[adapter.mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
               f'discovery = {"true" if discovery else "false"}\n{mqtt_extra}')
    return "\n".join(out)


def _wait(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# ------------------------------------------------------------------ latency
def latency(quick: bool = False) -> list[dict[str, Any]]:
    return [_latency(quick), *store_commit(quick)]


def store_commit(quick: bool = False) -> list[dict[str, Any]]:
    """What the COMMIT before publishing costs: ``Store.append`` of a DSMR 5
    snapshot (and its ack, as the adapter does), with the store's
    synchronous=FULL (an fsync per commit) and, for comparison only, NORMAL,
    interleaved, in the same temporary directory as the gateway's data."""
    from gateway.protocols.dsmr import DsmrDecoder
    from gateway.sim.dsmr import DsmrSimulator
    from gateway.store import Store

    n = 100 if quick else 300
    sim = DsmrSimulator("dsmr5")
    decoder = DsmrDecoder()
    t = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    snaps = []
    for _ in range(n):
        t += timedelta(seconds=1)
        (frame,) = decoder.feed(sim.telegram(t))
        assert isinstance(frame, MeterFrame), frame
        snaps.append(Snapshot(meter="m0", protocol="dsmr", device_id=frame.meter_id,
                              timestamp=frame.timestamp or t, received=t,
                              readings=frame.readings, checksum_ok=frame.checksum_ok))

    async def run(d: Path) -> dict[str, list[float]]:
        stores = {"FULL": await Store.open(d / "full.sqlite3"),
                  "NORMAL": await Store.open(d / "normal.sqlite3")}
        await stores["NORMAL"]._run(  # a benchmark knob, not an option
            "bench", True, lambda db: db.conn.execute("PRAGMA synchronous=NORMAL"))
        out: dict[str, list[float]] = {k: [] for k in stores}
        for snap in snaps:
            for mode, store in stores.items():
                t0 = time.perf_counter()
                rid = await store.append(snap, destinations=["mqtt"])
                out[mode].append((time.perf_counter() - t0) * 1e3)
                await store.outbox("mqtt").ack([rid])
            await asyncio.sleep(0.005)
        for store in stores.values():
            await store.close()
        return out

    with tempfile.TemporaryDirectory() as d:
        samples = asyncio.run(run(Path(d)))
    return [{"scenario": "latency", "case": f"store append, synchronous={mode}",
             "samples": len(v), "p50_ms": round(percentile(v, 50), 3),
             "p99_ms": round(percentile(v, 99), 3)} for mode, v in samples.items()]


def _latency(quick: bool = False) -> dict[str, Any]:
    """Write telegrams to a pty one at a time; time until the state message arrives.

    Each gateway sample is followed by a broker baseline sample: a paho client
    in this process publishes a payload of the same size at QoS 1 to a topic the
    same subscriber listens to.  ``added_p50_ms`` is the difference of the medians.
    """
    from gateway.sim.dsmr import DsmrSimulator
    from gateway.sim.runner import PtyMeter

    n = 60 if quick else 300
    sim = DsmrSimulator("dsmr5")
    with mosquitto() as port:
        meter = PtyMeter()
        col = Collector(port, "han/bench/meter/m0/state", "bench/baseline")
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        samples: list[float] = []
        baseline: list[float] = []
        lost = 0
        with gateway_process(_config(port, [("m0", meter.path)], discovery=True)):
            t = datetime(2026, 1, 1, tzinfo=UTC)
            # warm-up: wait until the gateway has opened the port and published once
            for _ in range(100):
                t += timedelta(seconds=1)
                col.event.clear()
                meter.write(sim.telegram(t))
                if col.event.wait(0.2):
                    break
            time.sleep(0.5)
            payload = col.arrivals[-1][2] if col.arrivals else b"x" * 1500
            for i in range(n):
                t += timedelta(seconds=1)
                telegram = sim.telegram(t)
                stamp = f'"timestamp":"{_clock_iso(telegram)}"'
                col.event.clear()
                before = len(col.arrivals)
                meter.write(telegram)
                t0 = time.perf_counter()  # the write returned: the last byte is in the pty
                got = None
                deadline = t0 + 2.0
                while got is None and time.perf_counter() < deadline:
                    col.event.wait(0.05)
                    col.event.clear()
                    for at, topic, body in col.arrivals[before:]:
                        if topic.endswith("/state") and stamp.encode() in body:
                            got = at
                            break
                if got is None:
                    lost += 1
                else:
                    samples.append((got - t0) * 1e3)
                time.sleep(0.03)
                # broker baseline, same payload size
                before = len(col.arrivals)
                marker = b"%08d" % i
                col.event.clear()
                t0 = time.perf_counter()
                pub.publish("bench/baseline", marker + payload[8:], qos=1)
                deadline = t0 + 2.0
                got = None
                while got is None and time.perf_counter() < deadline:
                    col.event.wait(0.05)
                    col.event.clear()
                    for at, topic, body in col.arrivals[before:]:
                        if topic == "bench/baseline" and body.startswith(marker):
                            got = at
                            break
                if got is not None:
                    baseline.append((got - t0) * 1e3)
                time.sleep(0.03 + (i % 7) * 0.01)
        pub.loop_stop()
        pub.disconnect()
        col.close()
        meter.close()
    p50, b50 = percentile(samples, 50), percentile(baseline, 50)
    return {"scenario": "latency", "case": "pty to subscriber", "samples": len(samples),
            "sent": n, "lost": lost,
            "p50_ms": round(p50, 2), "p90_ms": round(percentile(samples, 90), 2),
            "p99_ms": round(percentile(samples, 99), 2), "max_ms": round(max(samples, default=0), 2),
            "broker_p50_ms": round(b50, 2), "broker_p99_ms": round(percentile(baseline, 99), 2),
            "added_p50_ms": round(p50 - b50, 2), "payload_bytes": len(payload)}


def _clock_iso(telegram: bytes) -> str:
    """The telegram's own clock (0-0:1.0.0) as the snapshot's ``timestamp`` spells it."""
    from gateway.protocols.dsmr import parse_timestamp

    at = telegram.index(b"0-0:1.0.0(") + 10
    ts = parse_timestamp(telegram[at:telegram.index(b")", at)].decode())
    assert ts is not None
    return ts.isoformat()


# --------------------------------------------------------------- throughput
def _feeder_main(count: int, rate_hz: float, conn: Connection) -> None:
    """Child process: ``count`` P1-over-TCP meters (as ser2net), each at ``rate_hz``."""
    asyncio.run(_feeder(count, rate_hz, conn))


async def _feeder(count: int, rate_hz: float, conn: Connection) -> None:
    from gateway.sim.dsmr import DsmrSimulator

    sims = [DsmrSimulator("dsmr5", seed=i) for i in range(count)]
    clients: list[set[asyncio.StreamWriter]] = [set() for _ in range(count)]
    servers = []
    for i in range(count):
        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int = i) -> None:
            clients[i].add(w)
            try:
                while await r.read(1024):
                    pass
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                clients[i].discard(w)

        # port 0: the kernel picks a free port for us (no race with other sockets)
        servers.append(await asyncio.start_server(on_client, "127.0.0.1", 0))
    conn.send([s.sockets[0].getsockname()[1] for s in servers])
    loop = asyncio.get_running_loop()
    while not all(clients):
        await asyncio.sleep(0.05)
    conn.send("connected")
    sent = 0
    t = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
    interval = 1 / rate_hz
    next_at = loop.time()
    while not conn.poll():
        t += timedelta(seconds=1)  # meter time runs rate_hz times faster than ours
        for i, sim in enumerate(sims):
            data = sim.telegram(t)
            for w in clients[i]:
                w.write(data)
            sent += 1
        next_at += interval
        delay = next_at - loop.time()
        if delay < -1.0:  # we cannot keep up ourselves: do not try to catch up in a burst
            next_at = loop.time()
        await asyncio.sleep(max(0.0, delay))
    conn.recv()
    for s in servers:
        s.close()
    conn.send(sent)


def throughput(quick: bool = False) -> list[dict[str, Any]]:
    """Discovery off, per-quantity topics as configured by default: 100 meters
    at 15 Hz and 1000 meters at 1 Hz (a meter's telegrams can only be coalesced
    within a second); and 100 at 15 Hz with the per-quantity topics throttled
    away, to show what they cost."""
    return [
        _throughput(quick, label="100 meters x 15 Hz, default topics", mqtt_extra=""),
        _throughput(quick, label="1000 meters x 1 Hz, default topics", mqtt_extra="",
                    meters=1000, rate_hz=1.0),
        _throughput(quick, label="100 meters x 15 Hz, per-quantity throttled away",
                    mqtt_extra="min_interval_s = 3600\nheartbeat_s = 0\n"),
    ]


def _throughput(quick: bool, *, label: str, mqtt_extra: str, meters: int = 100,
                rate_hz: float = 15.0) -> dict[str, Any]:
    """``meters`` TCP P1 streams at ``rate_hz`` each; count snapshots at the subscriber."""
    duration = 6.0 if quick else 20.0
    ctx = multiprocessing.get_context("spawn")
    with pinned(other_cpus()):
        parent, child = ctx.Pipe()
        feeder = ctx.Process(target=_feeder_main, args=(meters, rate_hz, child), daemon=True)
        feeder.start()
        ports: list[int] = parent.recv()
        with mosquitto(sys_interval=1) as port:
            col = Collector(port, "han/bench/meter/+/state", "han/bench/meter/+/history",
                            "$SYS/broker/messages/received", keep=False, unique=True)
            cfg = _config(port, [(f"m{i}", f"socket://127.0.0.1:{p}") for i, p in enumerate(ports)],
                          mqtt_extra=mqtt_extra)
            with gateway_process(cfg, cpu=GATEWAY_CPU) as proc:
                if not parent.poll(30):
                    raise RuntimeError("the gateway did not connect to every simulated meter")
                parent.recv()
                time.sleep(3.0 if quick else 5.0)  # warm up: caches, SQLite pages, paho
                c0, t0, cpu0 = col.count, time.monotonic(), proc_cpu_seconds(proc.pid)
                s0, n0 = col.by_suffix.get("state", 0), len(col.sys)
                q0 = outbox_rows(proc)
                time.sleep(duration)
                c1, t1, cpu1 = col.count, time.monotonic(), proc_cpu_seconds(proc.pid)
                s1, sys_window = col.by_suffix.get("state", 0), col.sys[n0:]
                q1 = outbox_rows(proc)
                parent.send("stop")
                sent = parent.recv()
                rss = proc_rss_mb(proc.pid)
                # Drain: every telegram sent must reach the subscriber (the
                # gateway's TCP buffers, bus, outbox empty), none twice is fine.
                assert col.unique is not None
                last, still = len(col.unique), time.monotonic()
                while len(col.unique) < sent and time.monotonic() - still < 3.0:
                    time.sleep(0.25)
                    if len(col.unique) != last:
                        last, still = len(col.unique), time.monotonic()
                missing = sent - len(col.unique)
            col.close()
        feeder.join(10)
    rate = (c1 - c0) / (t1 - t0)
    return {"scenario": "throughput", "case": label, "meters": meters,
            "offered_per_s": meters * rate_hz, "sent_total": sent,
            "delivered_per_s": round(rate, 1),
            "gateway_cpu_share": round((cpu1 - cpu0) / (t1 - t0), 2),
            "state_per_s": round((s1 - s0) / (t1 - t0), 1),
            "mqtt_msgs_per_s": _gateway_publishes_per_s(sys_window),
            # rows in SQLite (acked ones included until their DELETE is committed):
            # flat means the gateway keeps up, growing that it falls behind
            "outbox_rows_start": q0, "outbox_rows_end": q1, "rss_mb": round(rss, 1),
            # sent and never seen at the subscriber once the gateway drained
            "undelivered": missing}


def _gateway_publishes_per_s(samples: list[tuple[float, float, int]]) -> int | None:
    """PUBLISH packets per second from the gateway, from mosquitto's
    ``$SYS/broker/messages/received`` (every packet it received) less the
    subscriber's PUBACKs (one per message it got); the rest is noise (PINGREQ)."""
    if len(samples) < 2:
        return None
    (ta, va, ca), (tb, vb, cb) = samples[0], samples[-1]
    return round(((vb - va) - (cb - ca)) / (tb - ta))


# ---------------------------------------------------------------- resources
def resources(quick: bool = False) -> list[dict[str, Any]]:
    """One DSMR 5 meter at 1 Hz on a pty: the daemon's CPU share and RSS.

    Three daemons run side by side over the same seconds (the machine's noise
    hits all alike): the default config (discovery on, every quantity
    published with every telegram); the same with the per-quantity topics
    published on change only (a deadband of 0 for every quantity of the
    meter, the heartbeat as by default), fed the very same telegrams; and an
    idle baseline whose meter is silent.
    """
    from contextlib import ExitStack

    from gateway.sim.dsmr import DsmrSimulator
    from gateway.sim.runner import PtyMeter

    duration = 15.0 if quick else 90.0
    sim = DsmrSimulator("dsmr5")
    keys = ", ".join(f'"{k}" = 0.0' for k in _quantity_keys(sim))
    on_change = f"deadband = {{ {keys} }}\n"
    cases = [  # label, gateway id, telegrams?, extra [adapter.mqtt] keys
        ("1 Hz, default config", "bench", True, ""),
        ("1 Hz, per-quantity topics on change", "change", True, on_change),
        ("idle (meter silent)", "idle", False, ""),
    ]
    with mosquitto() as port, ExitStack() as stack:
        ptys = [PtyMeter() for _ in cases]
        for pty in ptys:
            stack.callback(pty.close)
        col = Collector(port, "han/bench/meter/m0/state", keep=False)
        stack.callback(col.close)
        stop = threading.Event()

        def push() -> None:
            while not stop.is_set():
                telegram = sim.telegram(datetime.now(UTC))
                for pty, (_label, _gw, fed, _extra) in zip(ptys, cases, strict=True):
                    if fed:
                        pty.write(telegram)
                stop.wait(1.0 - time.time() % 1.0)

        th = threading.Thread(target=push, daemon=True)
        procs = [
            stack.enter_context(gateway_process(_config(
                port, [("m0", pty.path)], gateway=gw, discovery=True, mqtt_extra=extra)))
            for pty, (_label, gw, _fed, extra) in zip(ptys, cases, strict=True)
        ]
        th.start()
        stack.callback(th.join, 5)
        stack.callback(stop.set)
        time.sleep(5.0)
        cpu0 = [proc_cpu_split(p.pid) for p in procs]
        w0 = [_wakeups(p.pid) for p in procs]
        t0, c0 = time.monotonic(), col.count
        rss: list[list[float]] = [[] for _ in procs]
        end = t0 + duration
        while time.monotonic() < end:
            time.sleep(1.0)
            for r, p in zip(rss, procs, strict=True):
                r.append(proc_rss_mb(p.pid))
        cpu1 = [proc_cpu_split(p.pid) for p in procs]
        w1 = [_wakeups(p.pid) for p in procs]
        t1, c1 = time.monotonic(), col.count
    secs = t1 - t0
    return [
        {"scenario": "resources", "case": label, "seconds": round(secs),
         "published_state": (c1 - c0) if gw == "bench" else None,
         "cpu_percent_of_core": round((sum(b) - sum(a)) / secs * 100, 3),
         # of which in the kernel (syscalls, the fsync of every commit)
         "system_percent": round((b[1] - a[1]) / secs * 100, 3),
         "rss_mb_median": round(median(r), 1), "rss_mb_max": round(max(r), 1),
         "wakeups_per_s": round((wb - wa) / secs, 1)}
        for (label, gw, _fed, _extra), a, b, r, wa, wb in zip(cases, cpu0, cpu1, rss, w0, w1,
                                                             strict=True)
    ]


def _quantity_keys(sim: Any) -> list[str]:
    """The per-quantity topic keys of the simulator's telegrams."""
    from gateway.protocols.dsmr import DsmrDecoder
    from gateway.quantities import quantities_for

    at = datetime(2026, 1, 1, tzinfo=UTC)
    (frame,) = DsmrDecoder().feed(sim.telegram(at))
    assert isinstance(frame, MeterFrame), frame
    snap = Snapshot(meter="m0", protocol=frame.protocol, device_id=frame.meter_id,
                    timestamp=at, received=at, readings=frame.readings)
    return sorted({q.key for _r, q in quantities_for(snap)})


def _wakeups(pid: int) -> int:
    """Voluntary context switches (sleeps that ended) of all the process's threads so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total

