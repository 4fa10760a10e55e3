"""The aiohttp server of the household page, ``/api`` and ``/metrics``.

Routes (the OpenAPI description at ``/api/openapi.json`` is the reference):
``/`` the page and ``/static/…`` its files; ``GET /api/live``, ``/api/history``
(``.csv``), ``/api/health``, ``/api/loads``, ``/api/session``; ``/api/events``
(server-sent events: ``live`` every ``update_interval_s``); ``POST
/api/login``, ``/api/logout``, ``/api/loads/{name}/override``,
``/api/rules/reload``; ``/metrics``.

Overrides take the same path as MQTT's ``load/<name>/set``: an
``OverrideRequest`` on the bus, answered by the rule runner with an
``OverrideResult`` of the same ``request_id`` (504 when none comes within
``override_timeout_s``).

Every response carries a strict Content-Security-Policy (``'self'`` only): the
page makes no external request and runs no inline script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.bus import OverrideRequest, OverrideResult
from gateway.errors import GatewayError, StoreError
from gateway.model import LoadState, PriceSignal, Snapshot
from gateway.web import data
from gateway.web.auth import COOKIE, CSRF_HEADER, Sessions
from gateway.web.context import WebContext
from gateway.web.metrics import MetricsState, make_registry
from gateway.web.openapi import openapi_document

log = logging.getLogger(__name__)

__all__ = ["WebServer", "WebServerError"]

STATIC_DIR = Path(str(resources.files("gateway.web").joinpath("static")))
_LOAD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_METER = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_MODES = ("on", "off", "auto", "limit")
_MAX_DURATION_S = 7 * 86400.0
_TODAY_TTL_S = 10.0
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServerError(GatewayError):
    """The web server cannot start (address in use, bad TLS files, ...)."""


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def _err(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class WebServer:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.zone = data.local_zone(self.cfg.timezone)
        self.sessions = Sessions(self.cfg.session_lifetime_s)
        self.prices = data.PriceLog()
        self.metrics = MetricsState(gateway_id=ctx.gateway_id, version=ctx.version,
                                    started_ts=time.time())
        self.registry = make_registry(self.metrics)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._frames: dict[str, deque[float]] = {}
        self._today: tuple[float, tuple[str, date], dict[str, Any]] | None = None
        self._live: tuple[float, dict[str, Any]] | None = None
        self._live_lock = asyncio.Lock()
        self._store_failing = False

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The page's address (after ``start``; the bound port when ``listen`` used port 0)."""
        if self._url is None:
            raise WebServerError("the web server is not started")
        return self._url

    async def start(self) -> None:
        """Bind and serve; returns once listening.

        Raises:
            WebServerError: the address cannot be bound or the TLS files cannot be loaded.
        """
        cfg = self.cfg
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise WebServerError(f"web: cannot load tls_cert/tls_key ({cfg.tls_cert}, {cfg.tls_key}): {exc}") from exc
        self._closing.clear()
        # shutdown_timeout: how long stop() lets requests in flight finish (event streams end at once)
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        host, port = cfg.host, cfg.port
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise WebServerError(f"web: cannot listen on {cfg.listen}: {exc.strerror or exc}") from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        self._url = f"{'https' if ssl_ctx else 'http'}://{shown}:{bound}/"
        self._runner = runner
        await self._load_prices()
        self._watch = asyncio.create_task(self._watch_bus(), name="web:bus")
        log.info("web: household page on %s (listening on %s:%s)%s", self._url, host, bound,
                 "" if cfg.password_hash else "; no password set, changes are disabled")

    async def _load_prices(self) -> None:
        """The prices accepted in the last days (audit trail), to cost today after a restart."""
        now = datetime.now(UTC)
        try:
            rows = await self.ctx.store.audit(now - timedelta(days=3), now + timedelta(minutes=1),
                                              kind="signal", limit=5000)
        except StoreError as exc:
            log.warning("web: cannot read the price history: %s", exc)
            return
        for sig in data.prices_from_audit(rows):
            self.prices.add(sig)

    async def stop(self) -> None:
        """Close the event streams and the listener.  Idempotent."""
        self._closing.set()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _watch_bus(self) -> None:
        sub = self.ctx.bus.subscribe(Snapshot, PriceSignal, LoadState, maxsize=1000)
        try:
            async for item in sub:
                if isinstance(item, Snapshot):
                    q = self._frames.setdefault(item.meter, deque())
                    now = time.monotonic()
                    q.append(now)
                    while q and q[0] < now - 60.0:
                        q.popleft()
                elif isinstance(item, PriceSignal):
                    self.prices.add(item)
                    self._today = None  # cost again with the new price
                    self._live = None
                elif isinstance(item, LoadState):
                    self.metrics.note_load_state(item)
        finally:
            sub.close()

    # ----------------------------------------------------------------- app
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers_mw], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC_DIR, append_version=False)
        r.add_get("/api/openapi.json", self.openapi)
        r.add_get("/api/live", self.api_live)
        r.add_get("/api/history", self.api_history)
        r.add_get("/api/history.csv", self.api_history_csv)
        r.add_get("/api/health", self.api_health)
        r.add_get("/api/loads", self.api_loads)
        r.add_get("/api/session", self.api_session)
        r.add_post("/api/login", self.api_login)
        r.add_post("/api/logout", self.api_logout)
        r.add_post("/api/loads/{name}/override", self.api_override)
        r.add_post("/api/rules/reload", self.api_reload)
        r.add_get("/api/events", self.api_events)
        r.add_get("/metrics", self.metrics_handler)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._closing.set()

    @web.middleware
    async def _headers_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/"):
                raise
            resp = _err(exc.status, exc.reason)
        except StoreError as exc:
            log.warning("web: %s %s: %s", request.method, request.path, exc)
            resp = _err(503, f"the store is unavailable: {exc}")
        if not resp.prepared:
            h = resp.headers
            h.setdefault("Content-Security-Policy", _CSP)
            h.setdefault("X-Content-Type-Options", "nosniff")
            h.setdefault("Referrer-Policy", "no-referrer")
            h.setdefault("X-Frame-Options", "DENY")
            h.setdefault("Cache-Control", "no-store")
        return resp

    # --------------------------------------------------------------- pages
    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.ctx.version))

    # ---------------------------------------------------------------- live
    def _meter(self) -> str | None:
        if self.cfg.meter:
            return self.cfg.meter
        snaps = self.ctx.bus.last_snapshot
        if snaps:
            return sorted(snaps)[0]
        meters = self.ctx.health().get("meters") or {}
        return sorted(meters)[0] if meters else None

    async def _live_doc(self) -> dict[str, Any]:
        """The live document, computed at most once per half update interval for all clients."""
        async with self._live_lock:
            mono = time.monotonic()
            if self._live is not None and mono - self._live[0] < self.cfg.update_interval_s / 2:
                return self._live[1]
            doc = await self._compute_live()
            self._live = (mono, doc)
            return doc

    async def _compute_live(self) -> dict[str, Any]:
        bus = self.ctx.bus
        now = datetime.now(UTC)
        meter = self._meter()
        snap = bus.last_snapshot.get(meter) if meter else None
        imp, exp = data.power(snap)
        status = bus.last_status.get(meter) if meter else None
        price = bus.last_price
        return {
            "time": now.isoformat(),
            "gateway": self.ctx.gateway_id,
            "meter": meter,
            "online": bool(status.online) if status is not None else snap is not None,
            "meter_time": _iso(snap.timestamp) if snap else None,
            "received": _iso(snap.received) if snap else None,
            "power_import_w": _finite(imp),
            "power_export_w": _finite(exp),
            "net_power_w": _finite(None if imp is None and exp is None else (imp or 0.0) - (exp or 0.0)),
            "today": await self._today_safe(meter, now),
            "price": data.price_json(price, now),
            "dr_events": [data.dr_json(ev, now) for ev in sorted(bus.dr_events.values(), key=lambda e: e.start)
                          if ev.end > now],
            "loads": self._loads(),
        }

    def _price_at(self, t: datetime) -> float | None:
        sig = self.prices.at(t)
        if sig is not None:
            return sig.price_per_kwh
        if self.cfg.price_per_kwh is not None:
            return self.cfg.price_per_kwh
        last = self.ctx.bus.last_price
        return last.price_per_kwh if last is not None else None

    async def _today_safe(self, meter: str | None, now: datetime) -> dict[str, Any]:
        """Today's energy, or unknowns while the store fails (the live values still flow)."""
        try:
            return await self._today_doc(meter, now)
        except StoreError as exc:
            if not self._store_failing:
                log.warning("web: today's energy is unavailable: %s", exc)
            self._store_failing = True
            return await self._today_doc(None, now)

    async def _today_doc(self, meter: str | None, now: datetime) -> dict[str, Any]:
        today = now.astimezone(self.zone).date()
        currency = self.ctx.bus.last_price.currency if self.ctx.bus.last_price else self.cfg.currency
        empty = {"date": today.isoformat(), "import_kwh": None, "export_kwh": None, "cost": None,
                 "currency": currency}
        if meter is None:
            return empty
        key = (meter, today)
        mono = time.monotonic()
        if self._today is not None and self._today[1] == key and mono - self._today[0] < _TODAY_TTL_S:
            return self._today[2]
        sp = data.span("day", today, self.zone)
        ids = await data.energy_ids(self.ctx.store, meter)
        hourly = await data.interval_energy(self.ctx.store, meter, ids["import"], sp.boundaries)
        export = await data.interval_energy(self.ctx.store, meter, ids["export"], sp.boundaries)
        cost: float | None = 0.0
        for i, kwh in enumerate(hourly):
            if not kwh:
                continue
            p = self._price_at(sp.boundaries[i] + timedelta(minutes=30))
            cost = None if p is None or cost is None else cost + kwh * p
        have = [v for v in hourly if v is not None]
        doc = {
            "date": today.isoformat(),
            "import_kwh": round(sum(have), 4) if have else None,
            "export_kwh": round(sum(v for v in export if v is not None), 4) if any(
                v is not None for v in export) else None,
            "cost": None if cost is None or not have else round(cost, 4),
            "currency": currency,
        }
        self._today = (mono, key, doc)
        self._store_failing = False
        return doc

    def _loads(self) -> list[dict[str, Any]]:
        states = self.ctx.bus.load_states
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for spec in self.ctx.loads():
            name = str(spec.get("name", ""))
            seen.add(name)
            out.append(self._load_json(name, spec, states.get(name)))
        for name, st in sorted(states.items()):
            if name not in seen:
                out.append(self._load_json(name, {}, st))
        return out

    @staticmethod
    def _load_json(name: str, spec: Mapping[str, Any], st: LoadState | None) -> dict[str, Any]:
        def num(v: Any) -> float | None:
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

        return {
            "name": name,
            "description": str(spec.get("description") or ""),
            "rated_power_w": num(spec.get("rated_power_w")),
            "priority": int(spec["priority"]) if isinstance(spec.get("priority"), int) else None,
            "actuator": str(spec.get("actuator") or ""),
            "configured": bool(spec),
            "state": None if st is None else {
                "on": st.on,
                "override": st.override,
                "since": st.since.isoformat(),
                "reason": st.reason,
                "rule": st.rule,
                "until": _iso(st.until),
                "limit_w": num(st.limit_w),
                "power_w": num(st.power_w),
            },
        }

    async def api_live(self, _request: web.Request) -> web.Response:
        return web.json_response(await self._live_doc())

    async def api_loads(self, _request: web.Request) -> web.Response:
        return web.json_response({"loads": self._loads()})

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
            "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"})
        await resp.prepare(request)
        self.metrics.sse_clients += 1
        try:
            await resp.write(b"retry: 2000\n\n")
            while not self._closing.is_set():
                doc = await self._live_doc()
                await resp.write(b"event: live\ndata: " + json.dumps(doc).encode() + b"\n\n")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.update_interval_s):
                        await self._closing.wait()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.metrics.sse_clients -= 1
        return resp

    # ------------------------------------------------------------- history
    async def _history_args(self, request: web.Request) -> tuple[str, data.Period, date, data.Compare] | web.Response:
        q = request.query
        period = q.get("period", "day")
        if period not in data.PERIODS:
            return _err(400, f"period must be one of {', '.join(data.PERIODS)}")
        p: data.Period = period
        today = datetime.now(UTC).astimezone(self.zone).date()
        date_s = q.get("date")
        if date_s is None:
            anchor = today
        else:
            try:
                anchor = date.fromisoformat(date_s)
            except ValueError:
                return _err(400, "date must be YYYY-MM-DD")
            if len(date_s) != 10:
                return _err(400, "date must be YYYY-MM-DD")
            if not 1971 <= anchor.year <= 9998:
                return _err(404, "no history outside the years 1971-9998")
        compare = q.get("compare", data.DEFAULT_COMPARE[p])
        if compare not in data.COMPARES:
            return _err(400, f"compare must be one of {', '.join(data.COMPARES)}")
        meter = q.get("meter") or self._meter()
        if meter is None:
            return _err(404, "no meter configured or seen yet")
        if not _METER.match(meter):
            return _err(400, "meter must be a configured meter id")
        known = set(self.ctx.bus.last_snapshot) | set(self.ctx.health().get("meters") or {})
        if meter not in known and meter not in await self.ctx.store.meters():
            return _err(404, f"unknown meter {meter!r}")
        return meter, p, anchor, compare

    async def api_history(self, request: web.Request) -> web.Response:
        args = await self._history_args(request)
        if isinstance(args, web.Response):
            return args
        return web.json_response(await data.history(self.ctx.store, *args, self.zone))

    async def api_history_csv(self, request: web.Request) -> web.Response:
        args = await self._history_args(request)
        if isinstance(args, web.Response):
            return args
        doc = await data.history(self.ctx.store, *args, self.zone)
        meter, period, anchor, compare = args
        name = f"{self.ctx.gateway_id}-{meter}-{period}-{anchor.isoformat()}-vs-{compare}.csv"
        return web.Response(text=data.history_csv(doc), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # -------------------------------------------------------------- health
    async def _health_doc(self) -> dict[str, Any]:
        h = self.ctx.health()
        bus = self.ctx.bus
        now = datetime.now(UTC)
        mono = time.monotonic()
        meters = []
        for mid, m in sorted((h.get("meters") or {}).items()):
            m = m if isinstance(m, Mapping) else {}
            snap = bus.last_snapshot.get(mid)
            status = bus.last_status.get(mid)
            frames = self._frames.get(mid, deque())
            last = m.get("last_reading")
            meters.append({
                "id": mid,
                "online": bool(m.get("online")),
                "detail": str(m.get("detail") or (status.detail if status else "")),
                "last_reading": str(last) if last else _iso(snap.received if snap else None),
                "frames": int(m.get("frames") or 0),
                "frames_per_minute": sum(1 for t in frames if t >= mono - 60.0),
                "errors": int(m.get("errors") or 0),
                "checksum_errors": int(m.get("checksum_errors") or 0),
                "decryption_errors": int(m.get("decryption_errors") or 0),
            })
        adapters = []
        for name, a in sorted((h.get("adapters") or {}).items()):
            ok = a.get("ok") if isinstance(a, Mapping) else getattr(a, "ok", False)
            detail = a.get("detail") if isinstance(a, Mapping) else getattr(a, "detail", "")
            counters = a.get("counters") if isinstance(a, Mapping) else getattr(a, "counters", {})
            try:
                backlog: int | None = await self.ctx.store.outbox(name).count()
            except StoreError:
                backlog = None
            adapters.append({
                "name": name, "ok": bool(ok), "detail": str(detail or ""), "backlog": backlog,
                "counters": {str(k): int(v) for k, v in dict(counters or {}).items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)},
            })
        components = [
            {"name": name, "running": bool(c.get("running")), "restarts": int(c.get("restarts") or 0),
             "last_error": str(c.get("last_error") or "")}
            for name, c in sorted((h.get("components") or {}).items()) if isinstance(c, Mapping)
        ]
        return {
            "ok": bool(h.get("ok", True)),
            "gateway": self.ctx.gateway_id,
            "version": self.ctx.version,
            "started": self.ctx.started.isoformat(),
            "uptime_s": round(max(0.0, (now - self.ctx.started).total_seconds()), 1),
            "time": now.isoformat(),
            "meters": meters,
            "adapters": adapters,
            "components": components,
        }

    async def api_health(self, _request: web.Request) -> web.Response:
        return web.json_response(await self._health_doc())

    async def metrics_handler(self, _request: web.Request) -> web.Response:
        h = self.ctx.health()
        bus = self.ctx.bus
        backlog: dict[str, int] = {}
        for name in (h.get("adapters") or {}):
            with contextlib.suppress(StoreError):
                backlog[name] = await self.ctx.store.outbox(name).count()
        now = datetime.now(UTC)
        s = self.metrics
        s.snapshots = dict(bus.last_snapshot)
        s.health = h
        s.backlog = backlog
        s.load_states = dict(bus.load_states)
        s.price = (bus.last_price.price_per_kwh, bus.last_price.currency) if bus.last_price else None
        s.dr_active = sum(1 for ev in bus.dr_events.values() if ev.start <= now < ev.end)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---------------------------------------------------------------- auth
    def _client(self, request: web.Request) -> str:
        return request.remote or "?"

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not sent by browsers on same-origin GETs, nor by scripts
            return True
        try:
            return urlsplit(origin).netloc == request.host
        except ValueError:
            return False

    def _authorise(self, request: web.Request) -> web.Response | None:
        """None when the request may change state, else the refusal."""
        if self.cfg.password_hash is None:
            return _err(403, "changes are disabled: no password is configured (web.password_hash)")
        if not self._same_origin(request):
            return _err(403, "cross-origin request refused")
        sess = self.sessions.get(request.cookies.get(COOKIE))
        if sess is None:
            return _err(401, "log in with the gateway's web password first")
        if not self.sessions.csrf_ok(sess, request.headers.get(CSRF_HEADER)):
            return _err(403, f"missing or wrong {CSRF_HEADER} header")
        return None

    async def api_session(self, request: web.Request) -> web.Response:
        sess = self.sessions.get(request.cookies.get(COOKIE))
        return web.json_response({
            "authenticated": sess is not None,
            "password_set": self.cfg.password_hash is not None,
            "csrf_token": sess.csrf if sess is not None else None,
            "expires_in_s": round(sess.expires - time.monotonic(), 1) if sess is not None else None,
        })

    async def _json_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _err(400, "the body must be a JSON object")
        if not isinstance(body, dict):
            return _err(400, "the body must be a JSON object")
        return body

    async def api_login(self, request: web.Request) -> web.Response:
        from gateway.web.config import verify_password

        stored = self.cfg.password_hash
        if stored is None:
            return _err(403, "changes are disabled: no password is configured (web.password_hash)")
        if not self._same_origin(request):
            return _err(403, "cross-origin request refused")
        client = self._client(request)
        if self.sessions.throttled(client):
            return _err(429, "too many failed logins; wait a minute")
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        password = body.get("password")
        if not isinstance(password, str) or not password or len(password) > 1024:
            return _err(400, "password must be a non-empty string")
        # scrypt takes tens of ms: off the event loop
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)
        if not ok:
            self.sessions.failed(client)
            log.warning("web: failed login from %s", client)
            return _err(401, "wrong password")
        sid, sess = self.sessions.create()
        resp = web.json_response({"authenticated": True, "csrf_token": sess.csrf,
                                  "expires_in_s": self.cfg.session_lifetime_s})
        resp.set_cookie(COOKIE, sid, max_age=int(self.cfg.session_lifetime_s), httponly=True,
                        samesite="Strict", secure=self.cfg.tls_cert is not None, path="/")
        log.info("web: login from %s", client)
        return resp

    async def api_logout(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            return _err(403, "cross-origin request refused")
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = web.json_response({"authenticated": False})
        resp.del_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------- changes
    async def api_override(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _LOAD_NAME.match(name):
            return _err(404, "no such load")
        denied = self._authorise(request)
        if denied is not None:
            return denied
        if name not in {str(spec.get("name")) for spec in self.ctx.loads()} | set(self.ctx.bus.load_states):
            # answered here rather than after the rule engine's silence (no rules: no answer at all)
            return _err(404, f"no load named {name!r} is configured")
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        mode = body.get("mode")
        if mode not in _MODES:
            return _err(400, f"mode must be one of {', '.join(_MODES)}")
        duration = body.get("duration_s")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not 0 < duration <= _MAX_DURATION_S):
            return _err(400, f"duration_s must be a number of seconds in (0, {_MAX_DURATION_S:.0f}] or null")
        limit = body.get("limit_w")
        limit_w: float | None = None
        if mode == "limit":
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit < 1e9:
                return _err(400, "mode limit needs limit_w, a number of watts >= 0")
            limit_w = float(limit)
        elif limit is not None:
            return _err(400, "limit_w goes only with mode limit")
        rid = str(uuid.uuid4())
        bus = self.ctx.bus
        results = bus.subscribe(OverrideResult, maxsize=100)
        try:
            bus.publish(OverrideRequest(
                request_id=rid, load=name, mode=mode, source="web",
                limit_w=limit_w,
                duration_s=float(duration) if duration is not None else None))
            try:
                async with asyncio.timeout(self.cfg.override_timeout_s):
                    while True:
                        res = await results.get()
                        if res.request_id == rid:
                            break
            except TimeoutError:
                self.metrics.overrides["timeout"] += 1
                log.warning("web: override %s %s: no answer from the rule engine within %.0f s",
                            name, mode, self.cfg.override_timeout_s)
                return _err(504, "the rule engine did not answer in time", request_id=rid)
        finally:
            results.close()
        self.metrics.overrides["ok" if res.ok else "refused"] += 1
        log.info("web: override %s -> %s from %s: %s%s", name, mode, self._client(request),
                 "accepted" if res.ok else "refused", f" ({res.reason})" if res.reason else "")
        self._live = None  # the next event carries the new state
        return web.json_response({"ok": res.ok, "request_id": rid, "load": name, "mode": mode,
                                  "reason": res.reason}, status=200 if res.ok else 409)

    async def api_reload(self, request: web.Request) -> web.Response:
        denied = self._authorise(request)
        if denied is not None:
            return denied
        if self.ctx.reload_rules is None:
            return _err(501, "rule reload is not available in this gateway")
        problem = await self.ctx.reload_rules()
        log.info("web: rule reload from %s: %s", self._client(request), problem or "ok")
        if problem is not None:
            return web.json_response({"ok": False, "reason": problem}, status=422)
        return web.json_response({"ok": True, "reason": ""})
