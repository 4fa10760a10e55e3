"""The household page in a real browser (Debian's headless Chromium through chromedriver)
against the real gateway fed by a virtual DSMR meter, with a year of seeded history.

Screenshots of the main views go to ``test-artifacts/web/`` (git-ignored; the
``TEST_ARTIFACTS`` environment variable moves it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from gateway.model import DemandResponseEvent, PriceSignal

from .conftest import PASSWORD, LiveGateway, wait_until

pytestmark = pytest.mark.timeout(600)


def _text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _open(driver: Any, live: LiveGateway, *, width: int = 1280, height: int = 1000) -> None:
    driver.set_window_size(width, height)
    driver.get(live.url)
    wait_until(lambda: _text(driver, "power-import") not in ("", "–"), 30, "the first live value")


def _overflowing(driver: Any) -> list[str]:
    """Elements reaching past their section (outside scrolling tables): a broken layout."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll('section *')].filter(e => !e.closest('.scroll, .hist-table'))"
        ".filter(e => e.getBoundingClientRect().right > e.closest('section').getBoundingClientRect().right + 1)"
        ".map(e => e.tagName + '#' + e.id + '.' + e.className)"))


def test_live_values_update_every_second(chrome: Any, live_gateway: LiveGateway, artifacts: Path) -> None:
    _open(chrome, live_gateway)
    first_time = _text(chrome, "meter-time")
    first_power = _text(chrome, "power-import")
    # the page updates from /api/events: the reading time moves on, and the power with it
    wait_until(lambda: _text(chrome, "meter-time") != first_time, 20, "a newer reading on the page")
    wait_until(lambda: _text(chrome, "power-import") != first_power, 60, "the import power to change")
    power = _text(chrome, "power-import").replace(",", "").replace("\u202f", "").replace("\xa0", "")
    assert power.isdigit()
    assert _text(chrome, "conn") == "live"
    # today's energy comes from the store (seeded hours since midnight plus the live meter)
    wait_until(lambda: _text(chrome, "today-kwh") not in ("", "–"), 30, "today's energy")

    # a price and a coming DR event appear with the next update, the event with its countdown
    now = datetime.now(UTC)
    bus = live_gateway.gw.bus

    async def signals() -> None:
        bus.publish(PriceSignal(start=now - timedelta(minutes=1), end=now + timedelta(hours=1),
                                price_per_kwh=0.2875, tier=2, source="test"))
        bus.publish(DemandResponseEvent(event_id="browser-dr", start=now + timedelta(minutes=5),
                                        end=now + timedelta(minutes=35), target_power_w=2000.0, issuer="grid"))

    live_gateway.lt.run(signals())
    wait_until(lambda: "0.29" in _text(chrome, "price") or "0,29" in _text(chrome, "price"), 15, "the price")
    wait_until(lambda: "€" in _text(chrome, "today-cost"), 15, "today's cost at the known price")
    dr = wait_until(lambda: _text(chrome, "dr"), 15, "the DR event")
    assert "starts in 4 min" in dr and "target 2,000 W" in dr.replace(" ", ",")
    first_dr = dr
    assert _overflowing(chrome) == []
    wait_until(lambda: _text(chrome, "dr") != first_dr, 10, "the countdown to move")
    chrome.save_screenshot(str(artifacts / "live.png"))

    async def cancel() -> None:
        bus.publish(DemandResponseEvent(event_id="browser-dr", start=now, end=now, cancelled=True))

    live_gateway.lt.run(cancel())
    wait_until(lambda: _text(chrome, "dr") == "", 15, "the cancelled event to go")
    errors = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def _chart_state(driver: Any) -> dict[str, str]:
    el = driver.find_element(By.ID, "chart")
    return {k: el.get_attribute(f"data-{k}") or "" for k in ("points", "current", "previous", "peak")}


def test_history_chart_with_comparison(chrome: Any, live_gateway: LiveGateway, artifacts: Path) -> None:
    _open(chrome, live_gateway)
    chrome.find_element(By.ID, "history").location_once_scrolled_into_view
    # day view: hours of today beside the same day last week (seeded)
    st = wait_until(lambda: (s := _chart_state(chrome))["points"] and s, 30, "the day chart")
    assert int(st["points"]) in (23, 24, 25)
    assert int(st["previous"]) == int(st["points"]), "last week's day is fully seeded"
    assert int(st["current"]) >= 1 and st["peak"] != ""
    assert chrome.find_elements(By.CSS_SELECTOR, "#chart canvas"), "uPlot drew on a canvas"
    legend = chrome.find_element(By.CSS_SELECTOR, "#chart .u-legend").text
    assert "a week earlier" in legend and "Peak" in legend
    assert "a week earlier" in _text(chrome, "hist-summary")
    chrome.save_screenshot(str(artifacts / "history-day.png"))

    # year view: months of this year beside last year
    chrome.find_element(By.CSS_SELECTOR, '#period button[data-period="year"]').click()
    st = wait_until(lambda: (s := _chart_state(chrome))["points"] == "12" and s, 30, "the year chart")
    assert int(st["previous"]) >= 1 and int(st["current"]) >= 1
    assert "a year earlier" in chrome.find_element(By.CSS_SELECTOR, "#chart .u-legend").text
    csv = chrome.find_element(By.ID, "csv").get_attribute("href")
    assert "period=year" in csv and "compare=year" in csv
    chrome.save_screenshot(str(artifacts / "history-year.png"))

    # the CSV export holds the same numbers as the chart
    rows = chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done);", csv).strip().splitlines()
    assert rows[0].startswith("interval_start,import_kwh")
    assert len(rows) == 13


def test_override_refused_without_password_then_switches(
    chrome: Any, live_gateway: LiveGateway, artifacts: Path
) -> None:
    chrome.delete_all_cookies()
    _open(chrome, live_gateway)
    item = wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]'), 20,
                      "the boiler in the load list")[0]
    bus = live_gateway.gw.bus
    before = bus.load_states.get("boiler")

    item.find_element(By.CSS_SELECTOR, 'button[data-mode="off"]').click()
    msg = wait_until(lambda: (t := _text(chrome, "override-msg")) and "refused" in t and t, 15, "the refusal")
    assert "log in" in msg
    assert chrome.find_element(By.ID, "override-msg").get_attribute("data-status") == "401"
    assert bus.load_states.get("boiler") == before, "a refused click changes nothing"
    assert chrome.find_element(By.ID, "login").is_displayed()

    chrome.find_element(By.ID, "password").send_keys(PASSWORD)
    chrome.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_until(lambda: "Logged in" in _text(chrome, "login-state"), 15, "the login")
    assert not chrome.find_element(By.ID, "login").is_displayed()
    assert chrome.find_element(By.ID, "logout").is_displayed()

    item = chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]')
    item.find_element(By.CSS_SELECTOR, 'button[data-mode="off"]').click()
    wait_until(lambda: "done" in _text(chrome, "override-msg"), 15, "the accepted override")
    # the rule engine switched it (MQTT actuator) and the new state reached the page over SSE
    wait_until(lambda: (st := bus.load_states.get("boiler")) is not None and not st.on and st.override, 15,
               "the boiler's LoadState off")
    wait_until(lambda: chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]')
               .get_attribute("data-state") == "off", 15, "the page to show the boiler off")
    assert "manual override (web)" in chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"] .why').text
    chrome.find_element(By.ID, "loads").location_once_scrolled_into_view
    chrome.save_screenshot(str(artifacts / "loads.png"))

    item = chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]')
    item.find_element(By.CSS_SELECTOR, 'button[data-mode="on"]').click()
    wait_until(lambda: chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]')
               .get_attribute("data-state") == "on", 15, "the page to show the boiler on again")

    # logged out, a click is refused again
    chrome.find_element(By.ID, "logout").click()
    wait_until(lambda: chrome.find_element(By.ID, "login").is_displayed(), 15, "the login form after logout")
    item = chrome.find_element(By.CSS_SELECTOR, '#load-list li[data-load="boiler"]')
    item.find_element(By.CSS_SELECTOR, 'button[data-mode="off"]').click()
    wait_until(lambda: chrome.find_element(By.ID, "override-msg").get_attribute("data-status") == "401", 15,
               "the refusal after logout")
    assert bus.load_states["boiler"].on


def test_health_phone_dark_and_no_external_requests(
    chrome: Any, live_gateway: LiveGateway, artifacts: Path
) -> None:
    _open(chrome, live_gateway, width=390, height=844)
    # phone: nothing wider than the screen
    assert _overflowing(chrome) == []
    assert chrome.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    chrome.save_screenshot(str(artifacts / "phone.png"))
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "#meters-table tbody tr"), 20, "the meter table")
    row = chrome.find_element(By.CSS_SELECTOR, "#meters-table tbody tr").text
    assert row.startswith("main") and "online" in row
    assert "han-gateway" in _text(chrome, "health-summary")
    adapters = chrome.find_element(By.CSS_SELECTOR, "#adapters-table tbody").text
    assert "mqtt" in adapters

    chrome.set_window_size(1280, 1000)
    light = chrome.execute_script("return getComputedStyle(document.body).backgroundColor")
    chrome.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        dark = chrome.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert dark != light
        chrome.find_element(By.ID, "health").location_once_scrolled_into_view
        chrome.save_screenshot(str(artifacts / "health-dark.png"))
    finally:
        chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    # every resource the page loaded came from the gateway itself
    origin = live_gateway.url.rstrip("/")
    names = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(n.startswith(origin) for n in names), names
    # labelled controls: every input and select has a <label for=…>
    unlabelled = chrome.execute_script(
        "return [...document.querySelectorAll('input, select')]"
        ".filter(e => !document.querySelector('label[for=\"' + e.id + '\"]')).map(e => e.id)")
    assert unlabelled == []
