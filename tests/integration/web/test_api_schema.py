"""The JSON API checked against its own OpenAPI description with schemathesis: every
operation (but the endless event stream) with generated valid and invalid input, every
response's status, content type and body against the document."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from gateway.web.openapi import openapi_document

from .conftest import PASSWORD, LoopThread, Stack, build_stack, seed_history
from .test_api import live_snapshot

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    lt = LoopThread()
    tmp = tmp_path_factory.mktemp("api-schema")

    async def build() -> Stack:
        s = await build_stack(tmp, override_timeout_s=0.5)
        await seed_history(s.store, end=datetime.now(UTC), days=15)
        s.bus.publish(live_snapshot(1.5))
        return s

    stack = lt.run(build())
    try:
        yield stack
    finally:
        lt.run(stack.close())
        lt.close()


@pytest.fixture(scope="module")
def api_schema(api_stack: Stack) -> Any:
    return schemathesis.openapi.from_url(api_stack.url + "api/openapi.json")


# schemathesis' own pytest integration (``from_fixture``/``parametrize``) does not run
# under pytest 9 (it reads a removed private attribute), so each operation's
# hypothesis strategy is driven here directly.
OPERATIONS = [(method.upper(), path) for path, item in openapi_document("x")["paths"].items()
              for method in item if path != "/api/events"]


CHANGES = [("POST", "/api/loads/{name}/override"), ("POST", "/api/rules/reload")]


# Runs before the anonymous run below, whose generated wrong passwords throttle logins.
@pytest.mark.parametrize(("method", "path"), CHANGES, ids=[f"{m} {p}" for m, p in CHANGES])
def test_changes_with_a_session_match_the_description(api_stack: Stack, api_schema: Any, method: str,
                                                      path: str) -> None:
    """Logged in with the CSRF token: accepted (200), refused by the rule engine (409),
    malformed (400/404) -- every answer as documented."""
    http = requests.Session()
    r = http.post(api_stack.url + "api/login", json={"password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    operation = api_schema[path][method]
    statuses: set[int] = set()

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        headers = {**(case.headers or {}), "X-CSRF-Token": csrf}
        case.headers = headers
        statuses.add(case.call_and_validate(session=http).status_code)

    try:
        check()
        # and the accepted path, which random load names hardly ever take
        kwargs: dict[str, Any] = {"headers": {"X-CSRF-Token": csrf}}
        if "{name}" in path:
            kwargs.update(path_parameters={"name": "boiler"}, body={"mode": "off", "duration_s": 60},
                          media_type="application/json")
        statuses.add(operation.Case(**kwargs).call_and_validate(session=http).status_code)
    finally:
        http.close()
    assert 200 in statuses, statuses


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_matches_its_openapi_description(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate()

    check()


def test_openapi_document_lists_every_api_route(api_stack: Stack) -> None:
    documented = set(openapi_document("x")["paths"])
    app = api_stack.server._runner.app  # type: ignore[union-attr]
    served = {r.resource.canonical for r in app.router.routes()
              if r.resource is not None and (r.resource.canonical.startswith("/api/")
                                             or r.resource.canonical == "/metrics")}
    assert served == documented
