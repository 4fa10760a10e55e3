"""The OpenAPI 3.0 description of ``/api`` (served at ``/api/openapi.json``).

Written by hand next to the handlers in ``server.py``; a schemathesis test
(tests/integration/web/test_api_schema.py) checks every response against it.
"""

from __future__ import annotations

from typing import Any

_NUM_OR_NULL: dict[str, Any] = {"type": "number", "nullable": True}
_STR_OR_NULL: dict[str, Any] = {"type": "string", "nullable": True}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_TIME_OR_NULL: dict[str, Any] = {"type": "string", "format": "date-time", "nullable": True}


def _obj(props: dict[str, Any], *, required: list[str] | None = None, nullable: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": required if required is not None else list(props)}
    if nullable:
        out["nullable"] = True
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "refused, with the reason")
_DURATION: dict[str, Any] = {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": 0,
                             "maximum": 604800, "description": "seconds; null: the load's default expiry"}

_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string"}, "request_id": {"type": "string"}}, required=["error"]),
    "Price": _obj({
        "price_per_kwh": {"type": "number"}, "currency": {"type": "string"},
        "tier": {"type": "integer", "nullable": True}, "start": _TIME, "end": _TIME,
        "source": {"type": "string"}, "current": {"type": "boolean"},
    }, nullable=True),
    "DrEvent": _obj({
        "event_id": {"type": "string"}, "start": _TIME, "end": _TIME, "level": {"type": "integer"},
        "criticality": {"type": "integer"}, "target_power_w": _NUM_OR_NULL, "issuer": {"type": "string"},
        "active": {"type": "boolean"}, "starts_in_s": {"type": "number", "minimum": 0},
        "ends_in_s": {"type": "number", "minimum": 0},
    }),
    "LoadState": _obj({
        "on": {"type": "boolean"}, "override": {"type": "boolean"}, "since": _TIME,
        "reason": {"type": "string"}, "rule": {"type": "string"}, "until": _TIME_OR_NULL,
        "limit_w": _NUM_OR_NULL, "power_w": _NUM_OR_NULL,
    }, nullable=True),
    "Load": _obj({
        "name": {"type": "string"}, "description": {"type": "string"}, "rated_power_w": _NUM_OR_NULL,
        "priority": {"type": "integer", "nullable": True}, "actuator": {"type": "string"},
        "configured": {"type": "boolean"}, "state": _ref("LoadState"),
    }),
    "Today": _obj({
        "date": {"type": "string", "format": "date"}, "import_kwh": _NUM_OR_NULL,
        "export_kwh": _NUM_OR_NULL, "cost": _NUM_OR_NULL, "currency": {"type": "string"},
    }),
    "Live": _obj({
        "time": _TIME, "gateway": {"type": "string"}, "meter": _STR_OR_NULL, "online": {"type": "boolean"},
        "meter_time": _TIME_OR_NULL, "received": _TIME_OR_NULL,
        "power_import_w": _NUM_OR_NULL, "power_export_w": _NUM_OR_NULL, "net_power_w": _NUM_OR_NULL,
        "today": _ref("Today"), "price": _ref("Price"),
        "dr_events": {"type": "array", "items": _ref("DrEvent")},
        "loads": {"type": "array", "items": _ref("Load")},
    }),
    "Peak": _obj({"index": {"type": "integer", "minimum": 0}, "value": {"type": "number"}}, nullable=True),
    "Series": _obj({
        "start": _TIME, "end": _TIME, "starts": {"type": "array", "items": _TIME},
        "import_kwh": {"type": "array", "items": _NUM_OR_NULL},
        "export_kwh": {"type": "array", "items": _NUM_OR_NULL},
        "total_import_kwh": {"type": "number"}, "total_export_kwh": {"type": "number"},
        "peak": _ref("Peak"),
    }),
    "History": _obj({
        "meter": {"type": "string"}, "period": {"type": "string", "enum": ["day", "week", "month", "year"]},
        "compare": {"type": "string", "enum": ["previous", "year"]},
        "date": {"type": "string", "format": "date"}, "previous_date": {"type": "string", "format": "date"},
        "timezone": {"type": "string"}, "unit": {"type": "string", "enum": ["kWh"]},
        "labels": {"type": "array", "items": {"type": "string"}},
        "current": _ref("Series"), "previous": _ref("Series"),
        "peak_demand": _obj({"power_w": {"type": "number"}, "start": _TIME, "end": _TIME}, nullable=True),
    }),
    "Health": _obj({
        "ok": {"type": "boolean"}, "gateway": {"type": "string"}, "version": {"type": "string"},
        "started": _TIME, "uptime_s": {"type": "number", "minimum": 0}, "time": _TIME,
        "meters": {"type": "array", "items": _obj({
            "id": {"type": "string"}, "online": {"type": "boolean"}, "detail": {"type": "string"},
            "last_reading": _TIME_OR_NULL, "frames": {"type": "integer", "minimum": 0},
            "frames_per_minute": {"type": "integer", "minimum": 0}, "errors": {"type": "integer", "minimum": 0},
            "checksum_errors": {"type": "integer", "minimum": 0},
            "decryption_errors": {"type": "integer", "minimum": 0},
        })},
        "adapters": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "ok": {"type": "boolean"}, "detail": {"type": "string"},
            "backlog": {"type": "integer", "minimum": 0, "nullable": True},
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
        })},
        "components": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "running": {"type": "boolean"},
            "restarts": {"type": "integer", "minimum": 0}, "last_error": {"type": "string"},
        })},
    }),
    "Session": _obj({
        "authenticated": {"type": "boolean"}, "password_set": {"type": "boolean"},
        "csrf_token": _STR_OR_NULL, "expires_in_s": _NUM_OR_NULL,
    }),
    "OverrideResult": _obj({
        "ok": {"type": "boolean"}, "request_id": {"type": "string"}, "load": {"type": "string"},
        "mode": {"type": "string", "enum": ["on", "off", "auto", "limit"]}, "reason": {"type": "string"},
    }),
}

_HISTORY_PARAMS = [
    {"name": "period", "in": "query", "required": False,
     "schema": {"type": "string", "enum": ["day", "week", "month", "year"], "default": "day"}},
    {"name": "date", "in": "query", "required": False, "description": "a day in the period (local), default today",
     "schema": {"type": "string", "format": "date"}},
    {"name": "compare", "in": "query", "required": False,
     "description": "the period shown beside it: previous (a day: the same weekday a week earlier; a "
                    "week, month or year: the one before) or year (the same period a year earlier); "
                    "default previous for day and week, year otherwise",
     "schema": {"type": "string", "enum": ["previous", "year"]}},
    {"name": "meter", "in": "query", "required": False, "description": "meter id (default: the page's meter)",
     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}},
]

_CSRF = {"name": "X-CSRF-Token", "in": "header", "required": False,
         "description": "the token from /api/login or /api/session", "schema": {"type": "string"}}
_CHANGE_REFUSALS = {
    "400": _json(_ref("Error"), "malformed request"),
    "401": _json(_ref("Error"), "not logged in"),
    "403": _json(_ref("Error"), "no password configured, CSRF token missing or wrong, or cross-origin"),
}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the gateway's ``/api``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "han-gateway household API",
            "version": version,
            "description": "Live values, history, health and load overrides of one han-gateway. "
                           "Reading is open; changes need a session from /api/login plus its CSRF token "
                           "in the X-CSRF-Token header.",
        },
        "paths": {
            "/api/live": {"get": {"summary": "live values, today's energy, price, DR events, loads",
                                  "responses": {"200": _json(_ref("Live"), "the live document")}}},
            "/api/events": {"get": {
                "summary": "server-sent events: `event: live` with the /api/live document every update interval",
                "responses": {"200": {"description": "an endless text/event-stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
            "/api/history": {"get": {
                "summary": "energy per interval for a day/week/month/year and the period compared with",
                "parameters": _HISTORY_PARAMS,
                "responses": {"200": _json(_ref("History"), "the history document"),
                              "400": _json(_ref("Error"), "bad parameter"),
                              "404": _json(_ref("Error"), "no such meter, or a date outside 1971-9998"),
                              "503": _json(_ref("Error"), "the store is unavailable")}}},
            "/api/history.csv": {"get": {
                "summary": "the same history as CSV",
                "parameters": _HISTORY_PARAMS,
                "responses": {"200": {"description": "one row per interval",
                                      "content": {"text/csv": {"schema": {"type": "string"}}}},
                              "400": _json(_ref("Error"), "bad parameter"),
                              "404": _json(_ref("Error"), "no such meter, or a date outside 1971-9998"),
                              "503": _json(_ref("Error"), "the store is unavailable")}}},
            "/api/health": {"get": {"summary": "meters, adapters, components, version, uptime",
                                    "responses": {"200": _json(_ref("Health"), "the health document")}}},
            "/api/loads": {"get": {"summary": "configured loads with their state",
                                   "responses": {"200": _json(_obj({"loads": {"type": "array",
                                                                              "items": _ref("Load")}}),
                                                              "the loads")}}},
            "/api/session": {"get": {"summary": "whether this browser is logged in",
                                     "responses": {"200": _json(_ref("Session"), "the session")}}},
            "/api/login": {"post": {
                "summary": "log in with the web password (sets an HttpOnly session cookie)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                    {"password": {"type": "string", "minLength": 1, "maxLength": 1024}})}}},
                "responses": {"200": _json(_ref("Session"), "logged in; keep csrf_token"),
                              "400": _json(_ref("Error"), "malformed request"),
                              "401": _json(_ref("Error"), "wrong password"),
                              "403": _json(_ref("Error"), "no password configured, or cross-origin"),
                              "429": _json(_ref("Error"), "too many failed logins")}}},
            "/api/logout": {"post": {
                "summary": "end the session",
                "responses": {"200": _json(_obj({"authenticated": {"type": "boolean"}}), "logged out"),
                              "403": _json(_ref("Error"), "cross-origin")}}},
            "/api/loads/{name}/override": {"post": {
                "summary": "switch a load on/off, limit it, or hand it back to the rules (auto)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                               _CSRF],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    _obj({"mode": {"type": "string", "enum": ["on", "off", "auto"]},
                          "duration_s": _DURATION,
                          "limit_w": {"type": "number", "nullable": True, "enum": [None]}}, required=["mode"]),
                    _obj({"mode": {"type": "string", "enum": ["limit"]},
                          "duration_s": _DURATION,
                          "limit_w": {"type": "number", "minimum": 0, "maximum": 999999999}},
                         required=["mode", "limit_w"]),
                ]}}}},
                "responses": {"200": _json(_ref("OverrideResult"), "accepted by the rule engine"),
                              **_CHANGE_REFUSALS,
                              "404": _json(_ref("Error"), "no such load"),
                              "409": _json(_ref("OverrideResult"), "refused by the rule engine, with the reason"),
                              "504": _json(_ref("Error"), "the rule engine did not answer in time")}}},
            "/api/rules/reload": {"post": {
                "summary": "reload the rule files (validated fully before they replace the running ones)",
                "parameters": [_CSRF],
                "responses": {"200": _json(_obj({"ok": {"type": "boolean"}, "reason": {"type": "string"}}),
                                           "reloaded"),
                              **{k: v for k, v in _CHANGE_REFUSALS.items() if k != "400"},
                              "422": _json(_obj({"ok": {"type": "boolean"}, "reason": {"type": "string"}}),
                                           "the new rules are invalid; the old ones keep running"),
                              "501": _json(_ref("Error"), "no rule engine")}}},
            "/api/openapi.json": {"get": {"summary": "this document",
                                          "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
            "/metrics": {"get": {"summary": "Prometheus text exposition format",
                                 "responses": {"200": {"description": "metrics", "content": {
                                     "text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": _SCHEMAS},
    }
