"""Interval boundaries of the history views and the periods they are compared with."""

from __future__ import annotations

from datetime import UTC, date, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.web.data import history_csv, labels, peak, previous_anchor, span

BRU = ZoneInfo("Europe/Brussels")


def test_a_day_has_hourly_intervals_in_local_time() -> None:
    sp = span("day", date(2026, 11, 22), BRU)
    assert len(sp.boundaries) == 25
    assert sp.boundaries[0].astimezone(BRU).hour == 0 and sp.boundaries[0].tzinfo == UTC
    assert labels("day", sp, BRU)[:2] == ["00:00", "01:00"]


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_dst_days_have_23_or_25_hours(day: date, hours: int) -> None:
    sp = span("day", day, BRU)
    assert len(sp.boundaries) - 1 == hours
    assert sp.boundaries[-1].astimezone(BRU).hour == 0


def test_week_month_year() -> None:
    wk = span("week", date(2026, 11, 22), BRU)  # a Sunday
    assert wk.start.date() == date(2026, 11, 16) and len(wk.boundaries) == 8
    assert labels("week", wk, BRU)[0].startswith("Mon")
    assert len(span("month", date(2026, 2, 10), BRU).boundaries) == 29
    assert len(span("month", date(2028, 2, 10), BRU).boundaries) == 30
    yr = span("year", date(2026, 6, 1), BRU)
    assert len(yr.boundaries) == 13 and labels("year", yr, BRU)[0] == "Jan"
    # a month boundary across DST is still local midnight
    assert all(b.astimezone(BRU).hour == 0 for b in span("month", date(2026, 3, 1), BRU).boundaries)


def test_previous_periods() -> None:
    sunday = date(2026, 11, 22)
    assert previous_anchor("day", sunday, "previous") == sunday - timedelta(days=7)
    last_year = previous_anchor("day", sunday, "year")
    assert last_year.weekday() == sunday.weekday() and last_year.isocalendar().week == sunday.isocalendar().week
    assert last_year.year == 2025
    assert previous_anchor("month", date(2026, 3, 31), "previous") == date(2026, 2, 1)
    assert previous_anchor("month", date(2026, 1, 15), "previous") == date(2025, 12, 1)
    assert previous_anchor("month", date(2028, 2, 29), "year") == date(2027, 2, 28)
    assert previous_anchor("year", date(2026, 5, 5), "previous") == date(2025, 5, 5)
    # ISO week 53 compares with week 52 of a year that has none
    assert previous_anchor("week", date(2026, 12, 31), "year").isocalendar().week == 52


def test_peak_and_csv() -> None:
    assert peak([None, 1.0, 3.0, 2.0]) == {"index": 2, "value": 3.0}
    assert peak([None, None]) is None
    doc = {"current": {"starts": ["a", "b"], "import_kwh": [1.5, None], "export_kwh": [0.0, None]},
           "previous": {"starts": ["c"], "import_kwh": [2.25, None], "export_kwh": [None, None]}}
    assert history_csv(doc).split("\r\n") == [
        "interval_start,import_kwh,export_kwh,previous_start,previous_import_kwh,previous_export_kwh",
        "a,1.5,0,c,2.25,", "b,,,,,", ""]
