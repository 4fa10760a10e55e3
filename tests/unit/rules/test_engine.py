"""The engine's behaviours, driven through a small model of a house.

``House`` is the plant: import power is a base load plus what each configured
load draws while its actuator has it on (its rated power unless told
otherwise), and the actuators obey each command ``lag_s`` after it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import DemandResponseEvent, LoadAction, LoadCommand, LoadState, Reading, Snapshot
from gateway.rules import Engine, Override, parse_rule_texts

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def load(name: str, rated: str, **extra: object) -> str:
    """A [[load]] table; ``comfort`` is raw TOML, other values are quoted as needed."""
    keys: dict[str, object] = {"recovery": "0s", **extra}
    lines = [(f'[[load]]\nname = "{name}"\nactuator = "mqtt:home/{name}/set"\n'
             f'rated_power = "{rated}"\n')]
    for k, v in keys.items():
        lines.append(f"{k} = {v if k == 'comfort' else json.dumps(v)}\n")
    return "".join(lines)


class House:
    def __init__(self, text: str, *, seed: int = 0, base_kw: float = 0.0, lag_s: float = 0.0,
                 draw_kw: dict[str, float] | None = None, restore_delay: str | None = None,
                 learn_effects: bool = True) -> None:
        if restore_delay is not None:
            text += f'\n[settings]\nrestore_delay = "{restore_delay}"\n'
        self.rules = parse_rule_texts([("house.toml", text)])
        self.engine = Engine(self.rules, rng_seed=seed, learn_effects=learn_effects)
        self.t = T0
        self.base = base_kw
        self.lag_s = lag_s
        self.on = {ld.name: True for ld in self.rules.loads}
        self.limit: dict[str, float] = {}
        self.draw = {ld.name: ld.rated_power_w / 1000 for ld in self.rules.loads}
        self.draw.update(draw_kw or {})
        self.pending: list[tuple[datetime, LoadCommand]] = []
        self.log: list[LoadCommand] = []

    def import_kw(self) -> float:
        total = self.base
        for name, on in self.on.items():
            if on:
                total += min(self.draw[name], self.limit.get(name, 1e9))
        return total

    def _actuate(self) -> None:
        due = [p for p in self.pending if p[0] <= self.t]
        self.pending = [p for p in self.pending if p[0] > self.t]
        for _, c in due:
            self.on[c.load] = c.action is not LoadAction.SHED
            if c.action is LoadAction.LIMIT:
                assert c.limit_w is not None
                self.limit[c.load] = c.limit_w / 1000
            else:
                self.limit.pop(c.load, None)

    def step(self, dt: float = 1.0, *, base: float | None = None,
             observe: bool = True) -> list[LoadCommand]:
        self.t += timedelta(seconds=dt)
        if base is not None:
            self.base = base
        self._actuate()
        if observe:
            self.engine.observe(Snapshot(
                meter="main", protocol="dsmr", device_id=None, timestamp=self.t, received=self.t,
                readings=(Reading(id="1-0:1.7.0", value=round(self.import_kw(), 6), unit="kW"),
                          Reading(id="1-0:2.7.0", value=0.0, unit="kW"))))
        cmds = self.engine.evaluate(self.t)
        for c in cmds:
            self.pending.append((self.t + timedelta(seconds=self.lag_s), c))
        self._actuate()
        self.log.extend(cmds)
        return cmds

    def run(self, seconds: float, dt: float = 1.0, **kw: object) -> list[LoadCommand]:
        out: list[LoadCommand] = []
        for _ in range(round(seconds / dt)):
            out.extend(self.step(dt, **kw))  # type: ignore[arg-type]
        return out

    def state(self, name: str) -> LoadState:
        return next(s for s in self.engine.load_states() if s.load == name)


def actions(cmds: list[LoadCommand]) -> list[tuple[str, str]]:
    return [(c.load, c.action.value) for c in cmds]


PEAK = '''
[[rule]]
id = "peak"
when = "import_power_kw > {limit} kW"
action = "peak_limit"
limit = "{limit} kW"
'''


# ----------------------------------------------------------- safe states
def test_start_up_sends_every_load_to_its_safe_state() -> None:
    h = House(load("a", "1 kW") + load("b", "1 kW", safe_state="off"))
    cmds = h.step()
    assert actions(cmds) == [("a", "restore"), ("b", "shed")]
    assert all(c.rule == "safe-state" and c.reason.startswith("start-up") for c in cmds)
    assert cmds[1].until is None  # a safe state has no fail-safe deadline
    assert all(c.actuator == f"mqtt:home/{c.load}/set" and c.issued == h.t for c in cmds)
    # With fresh data and no rule shedding it, b runs normally.
    assert actions(h.step()) == [("b", "restore")]


def test_no_data_means_safe_state_and_no_rules() -> None:
    h = House(load("a", "1 kW") + load("b", "1 kW", safe_state="off")
              + '[[rule]]\nid = "r"\naction = "shed"\nloads = ["a"]\nwhen = "true"\n')
    assert actions(h.step(observe=False)) == [("a", "restore"), ("b", "shed")]
    assert h.run(60, observe=False) == []  # no repeats; the shed rule does not act
    assert h.state("a").on and h.state("a").rule == "safe-state"
    assert actions(h.step()) == [("a", "shed"), ("b", "restore")]
    assert h.log[-2].rule == "r"


def test_stale_data_restores_at_once_and_rules_start_over() -> None:
    h = House(load("a", "2 kW", priority=1) + PEAK.format(limit=3).replace(
        'action', 'for = "10s"\naction'), base_kw=2.0)
    h.step()
    assert h.run(10) == []  # over the limit since the 2nd step: the hold ends at 12 s
    shed = h.step()
    assert actions(shed) == [("a", "shed")]
    h.run(30, observe=False)
    assert h.on["a"] is False
    stale = h.step(observe=False)  # more than 30 s without a snapshot: stale
    assert actions(stale) == [("a", "restore")]
    assert stale[0].rule == "safe-state" and "stale" in stale[0].reason
    # Data is back and import is high again: the rule must hold its 10 s again.
    assert h.run(10) == []
    assert actions(h.step()) == [("a", "shed")]


# ------------------------------------------------------------ peak limiting
FOUR = (load("a", "1 kW", priority=1) + load("b", "3 kW", priority=1)
        + load("c", "5 kW", priority=2) + load("d", "500 W", priority=3))


@pytest.mark.parametrize(("excess", "shed"), [
    (0.8, {"a"}),  # the smallest load of the lowest priority that covers it
    (2.5, {"b"}),
    (3.5, {"a", "b"}),  # no single one does: the biggest first, then the rest
    (4.5, {"a", "b", "c"}),  # priority 1 is not enough
    (9.0, {"a", "b", "c"}),
    (20.0, {"a", "b", "c", "d"}),  # not enough at all: everything that can go
])
def test_peak_limit_sheds_the_fewest_lowest_priority_loads(excess: float, shed: set[str]) -> None:
    h = House(FOUR + PEAK.format(limit=10), base_kw=10 + excess - 9.5)
    h.step()
    cmds = h.step()
    assert {c.load for c in cmds} == shed
    assert all(c.action is LoadAction.SHED and c.rule == "peak" for c in cmds)
    assert all("over the limit 10.00 kW" in c.reason for c in cmds)
    if excess <= 9.0:
        assert h.import_kw() <= 10 + 1e-9
    assert h.run(30) == []  # met: nothing more to do


def test_restore_one_at_a_time_when_there_is_room() -> None:
    h = House(FOUR + PEAK.format(limit=10) + 'restore_below = "9.6 kW"\n'
              'until = "import_power_kw < 0.1"\n', base_kw=5.0, restore_delay="0s")
    h.step()
    h.step()
    assert {n for n, on in h.on.items() if not on} == {"a", "b", "c"}
    h.base = 0.0  # import 0.5: room for c (5.5), then b (8.5), then a (9.5)
    cmds = h.run(20)
    # The most important first; each waits for the meter to settle (5 s).
    assert [c.load for c in cmds] == ["c", "b", "a"]
    times = [c.issued for c in cmds if c.issued is not None]
    assert times == sorted(times) and len(set(times)) == 3
    assert all(c.reason == "no rule sheds it any more" for c in cmds)


def test_measured_effect_beats_rated_power() -> None:
    # x says 3 kW but draws 0.3 kW; y and z draw what they say.
    text = (load("x", "3 kW", priority=1) + load("y", "2 kW", priority=1)
            + load("z", "1 kW", priority=1)
            + PEAK.format(limit=5).replace("action", 'until = "import_power_kw < 1"\naction'))
    h = House(text, base_kw=4.2, draw_kw={"x": 0.3})  # 7.5 kW: 2.5 over
    h.step()
    first = h.step()
    assert actions(first) == [("x", "shed")]  # by rated power x alone would do
    later = h.run(10)
    assert actions(later) == [("y", "shed"), ("z", "shed")]  # the meter showed 0.3 kW
    h.run(300, base=0.0)
    assert all(h.on.values())
    again = h.run(2, base=4.2)
    assert actions(again) == [("y", "shed"), ("z", "shed")]  # x would not help: left on
    assert h.import_kw() <= 5.0


def test_reported_power_is_used_as_the_estimate() -> None:
    h = House(load("x", "3 kW", priority=1) + load("y", "2 kW", priority=1) + PEAK.format(limit=5),
              base_kw=4.0)
    h.step()
    h.engine.report(LoadState(load="x", on=True, since=T0, power_w=500.0), h.t)
    h.engine.report(LoadState(load="nobody", on=True, since=T0, power_w=500.0), h.t)  # ignored
    # 4 + 0.5 + 2 = 6.5 kW, 1.5 over: with x at 0.5 kW only y covers it
    h.draw["x"] = 0.5
    assert actions(h.step()) == [("y", "shed")]


def test_switches_the_meter_does_not_show_yet_are_counted() -> None:
    h = House(FOUR + PEAK.format(limit=10), base_kw=3.0, lag_s=3.0)  # 12.5 kW, 2.5 over
    h.step()
    assert actions(h.step()) == [("b", "shed")]
    # For 3 s the meter still shows 12.5 kW: nothing more is shed meanwhile.
    assert h.run(10) == []
    assert h.import_kw() == pytest.approx(9.5)


# ------------------------------------------------------- hysteresis, dwell
def test_for_and_until_give_hysteresis() -> None:
    text = load("a", "2 kW") + '''
[[rule]]
id = "hot"
when = "import_power_kw > 5 kW"
for = "10s"
until = "avg(import_power_kw, 30s) < 3 kW"
until_for = "5s"
action = "shed"
'''
    h = House(text, base_kw=1.0, restore_delay="0s")
    h.step()
    assert h.run(5, base=4.0) == []  # 6 kW for 5 s: too short
    assert h.run(20, base=1.0) == []
    cmds = h.run(15, base=4.0)
    assert actions(cmds) == [("a", "shed")]
    shed_at = cmds[0].issued
    assert shed_at == T0 + timedelta(seconds=1 + 5 + 20 + 1 + 10)
    # "when" is false now (4 kW) but "until" is not true: it stays shed.
    assert h.run(120) == []
    restored = h.run(60, base=0.5)  # mean under 3 kW, held 5 s
    assert actions(restored) == [("a", "restore")]


def test_min_on_and_min_off_are_respected() -> None:
    text = load("a", "2 kW", min_on="1m", min_off="2m") + '''
[[rule]]
id = "r"
when = "import_power_kw > 5 kW"
until = "import_power_kw < 3 kW"
action = "shed"
'''
    h = House(text, base_kw=1.0, restore_delay="0s")
    h.step()  # on since T0 + 1 s
    assert h.run(9, base=4.0) == []
    wake = h.engine.next_wakeup(h.t)
    assert wake == T0 + timedelta(seconds=61)  # min_on ends
    cmds = h.run(60)
    assert actions(cmds) == [("a", "shed")] and cmds[0].issued == T0 + timedelta(seconds=61)
    # The load is off, so import is 3 kW... take the base down: restore wanted at once,
    # but not before 2 min off.
    cmds = h.run(150, base=0.0)
    assert actions(cmds) == [("a", "restore")]
    assert cmds[0].issued == T0 + timedelta(seconds=61 + 120)


def test_restores_are_staggered_by_a_seeded_random_delay() -> None:
    text = "".join(load(f"l{i}", "1 kW") for i in range(8)) + '''
[settings]
restore_delay = "2m"

[[rule]]
id = "r"
when = "import_power_kw > 100 kW"
until = "import_power_kw < 50 kW"
action = "shed"
'''

    def run(seed: int) -> list[LoadCommand]:
        h = House(text, seed=seed, base_kw=200.0)
        h.step()
        h.step()
        assert not any(h.on.values())
        h.step(base=0.0)
        return h.run(130)

    a, b, c = run(1), run(1), run(2)
    assert a == b  # deterministic for a seed
    assert [x.issued for x in a] != [x.issued for x in c]
    release = T0 + timedelta(seconds=3)
    times = [x.issued for x in a]
    assert len(a) == 8 and len(set(times)) > 4
    assert all(t is not None and release <= t <= release + timedelta(minutes=2) for t in times)


# ----------------------------------------------------------- fail-safe
def test_fail_safe_deadline_restores_whatever_the_rules_say() -> None:
    text = load("a", "1 kW", max_shed="10m", recovery="5m") + (
        '[[rule]]\nid = "always"\naction = "shed"\nwhen = "true"\n')
    h = House(text)
    h.step()
    shed = h.step()
    assert actions(shed) == [("a", "shed")]
    deadline = h.t + timedelta(minutes=10)
    assert shed[0].until == deadline and h.state("a").until == deadline
    assert h.engine.next_wakeup(h.t) == deadline
    assert h.run(599) == []
    back = h.step()
    assert actions(back) == [("a", "restore")] and back[0].issued == deadline
    assert back[0].rule == "fail-safe" and "whatever the rules say" in back[0].reason
    assert h.run(299) == []  # recovering: the rule cannot shed it again
    again = h.step()
    assert actions(again) == [("a", "shed")]
    assert again[0].until == h.t + timedelta(minutes=10)


def test_fail_safe_when_evaluated_late() -> None:
    text = load("a", "1 kW", max_shed="10m") + (
        '[[rule]]\nid = "always"\naction = "shed"\nwhen = "true"\n')
    h = House(text)
    h.step()
    h.step()
    cmds = h.step(3600)  # an hour without evaluation (a stuck loop, say)
    assert actions(cmds) == [("a", "restore")] and cmds[0].rule == "fail-safe"


def test_comfort_budget_shortens_and_spaces_sheds() -> None:
    text = load("a", "1 kW", max_shed="4h", comfort='{ max_off = "30m", window = "2h" }') + (
        '[[rule]]\nid = "always"\naction = "shed"\nwhen = "true"\n')
    h = House(text, restore_delay="0s")
    h.step()
    first = h.step()
    assert first[0].until == h.t + timedelta(minutes=30)  # the budget, not max_shed
    h.run(30 * 60 - 1, dt=1.0)
    assert actions(h.step()) == [("a", "restore")]
    # The 30 min stay in the 2 h window: no shed until they slide out of it.
    cmds = h.run(2 * 3600, dt=10.0)
    assert actions(cmds)[0] == ("a", "shed")
    assert cmds[0].issued is not None and cmds[0].issued >= T0 + timedelta(hours=2)


# ------------------------------------------------------------- overrides
def test_manual_override_wins_and_expires() -> None:
    text = load("a", "1 kW") + load("b", "1 kW") + (
        '[[rule]]\nid = "r"\naction = "shed"\nloads = ["b"]\nwhen = "import_power_kw > 5"\n')
    h = House(text, base_kw=1.0)
    h.step()
    until = h.t + timedelta(minutes=10)
    assert h.engine.set_override(Override(load="a", action=LoadAction.SHED, until=until,
                                          reason="holiday"), h.t) is None
    cmds = h.step()
    assert actions(cmds) == [("a", "shed")]
    assert (cmds[0].rule, cmds[0].reason, cmds[0].until) == ("override", "holiday", until)
    assert h.state("a").override
    # Stale data does not undo a person's decision.
    assert h.run(60, observe=False) == []
    assert h.run(600 - 62) == []
    assert actions(h.step()) == [("a", "restore")]  # expired
    # A restore override beats a shed rule; a limit override limits.
    h.engine.set_override(Override(load="b", action=LoadAction.RESTORE,
                                   until=h.t + timedelta(minutes=5)), h.t)
    assert h.run(10, base=10.0) == [] and h.on["b"]
    h.engine.set_override(Override(load="a", action=LoadAction.LIMIT, limit_w=400.0,
                                   until=h.t + timedelta(minutes=5)), h.t)
    cmds = h.step()
    assert [(c.load, c.action, c.limit_w) for c in cmds] == [("a", LoadAction.LIMIT, 400.0)]
    assert h.engine.clear_override("b") and not h.engine.clear_override("b")
    assert actions(h.step()) == [("b", "shed")]


def test_override_refusals() -> None:
    h = House(load("a", "1 kW"))
    h.step()
    later = h.t + timedelta(minutes=1)
    assert h.engine.set_override(Override(load="ghost", action=LoadAction.SHED, until=later),
                                 h.t) == "no load named 'ghost' is configured"
    assert "not in the future" in (h.engine.set_override(
        Override(load="a", action=LoadAction.SHED, until=h.t), h.t) or "")
    assert "limit_w" in (h.engine.set_override(
        Override(load="a", action=LoadAction.LIMIT, until=later), h.t) or "")
    assert not h.engine.clear_override("ghost")


# ------------------------------------------------------------- actions
def test_limit_follows_the_expression_with_steps_and_hysteresis() -> None:
    text = load("ev", "7 kW", min_power="1.4 kW", limit_step="500 W") + '''
[[rule]]
id = "surplus"
when = "true"
action = "limit"
power = "export_power_kw"
loads = ["ev"]
'''
    rs = parse_rule_texts([("ev.toml", text)])
    e = Engine(rs, rng_seed=0)
    settings = rs.settings
    assert settings.restore_delay_s == 120.0
    t = T0

    def at(export_kw: float, dt: float = 1.0) -> list[tuple[str, float | None]]:
        nonlocal t
        t += timedelta(seconds=dt)
        e.observe(Snapshot(meter="m", protocol="p", device_id=None, timestamp=t, received=t,
                           readings=(Reading(id="1-0:2.7.0", value=export_kw, unit="kW"),
                                     Reading(id="1-0:1.7.0", value=0.0, unit="kW"))))
        return [(c.action.value, c.limit_w) for c in e.evaluate(t)]

    at(0.0)  # start-up
    assert at(3.2) == [("limit", 3000.0)]
    assert at(3.6) == []  # less than 1.5 steps up: stays
    assert at(3.8) == [("limit", 3500.0)]
    assert at(3.4) == [("limit", 3000.0)]  # down at once
    assert at(1.0) == [("shed", None)]  # under min_power: off (a shed, with a deadline)
    back = [c for _ in range(121) for c in at(3.0)]  # after a random delay up to 120 s
    assert back == [("limit", 3000.0)]
    assert at(9.0) == [("restore", None)]  # at or above rated: fully on


def test_cycle_runs_the_duty_share_of_each_period() -> None:
    text = load("ac", "3 kW") + '''
[[rule]]
id = "cycle"
when = "true"
action = "cycle"
duty = "25"
period = "1h"
'''
    h = House(text)
    h.step()
    off = 0
    for _ in range(360 * 2):
        h.step(10.0)
        off += 0 if h.on["ac"] else 10
    assert off == pytest.approx(2 * 45 * 60, abs=30)
    assert all(c.rule in ("cycle", "safe-state") for c in h.log)


def test_restore_rule_vetoes_sheds() -> None:
    text = load("a", "1 kW") + load("b", "1 kW") + '''
[[rule]]
id = "shed-all"
when = "true"
action = "shed"

[[rule]]
id = "keep-b"
when = "true"
action = "restore"
loads = ["b"]
'''
    h = House(text)
    h.step()
    assert actions(h.step()) == [("a", "shed")]
    assert h.state("b").on


def test_dr_targets_pick_loads_by_class() -> None:
    text = (load("ac", "3 kW", classes=["hvac"]) + load("boiler", "2 kW", classes=["water_heater"])
            + '[[rule]]\nid = "dr"\nwhen = "dr.active"\naction = "shed"\ndr_targets = true\n')
    h = House(text, restore_delay="0s")
    h.step()
    h.engine.set_dr_event(DemandResponseEvent(
        event_id="e1", start=h.t, end=h.t + timedelta(minutes=10), criticality=3,
        load_classes=("hvac",)), h.t)
    assert actions(h.step()) == [("ac", "shed")]
    h.engine.set_dr_event(DemandResponseEvent(
        event_id="e2", start=h.t, end=h.t + timedelta(minutes=20), criticality=5), h.t)
    assert actions(h.step()) == [("boiler", "shed")]  # the strongest names no class: all
    cmds = h.run(20 * 60)
    assert sorted(actions(cmds)) == [("ac", "restore"), ("boiler", "restore")]


# ---------------------------------------------------- reload, determinism
def test_reload_keeps_state_and_restores_removed_loads() -> None:
    rule = '[[rule]]\nid = "r"\naction = "shed"\nwhen = "true"\n'
    h = House(load("a", "1 kW", max_shed="1h") + load("b", "1 kW") + rule)
    h.step()
    h.step()
    deadline = h.state("a").until
    new = parse_rule_texts([("n.toml", load("a", "1 kW", max_shed="1h") + rule)])
    cmds = h.engine.reload(new, h.t)
    assert [(c.load, c.action, c.rule, c.actuator) for c in cmds] == [
        ("b", LoadAction.RESTORE, "reload", "mqtt:home/b/set")]
    assert [s.load for s in h.engine.load_states()] == ["a"]
    assert h.state("a").until == deadline and not h.state("a").on
    assert h.step() == []


def test_same_seed_same_commands() -> None:
    text = FOUR + PEAK.format(limit=6) + '[settings]\nrestore_delay = "1m"\n'

    def run(seed: int) -> list[LoadCommand]:
        h = House(text, seed=seed)
        out: list[LoadCommand] = []
        for i in range(600):
            out.extend(h.step(base=[0.5, 3.0, 6.0, 1.0][(i // 37) % 4]))
        return out

    assert run(7) == run(7)


def test_commands_are_logged_with_their_rule(caplog: pytest.LogCaptureFixture) -> None:
    h = House(FOUR + PEAK.format(limit=10), base_kw=3.0)
    with caplog.at_level(logging.INFO, logger="gateway.rules.engine"):
        h.step()
        cmds = h.step()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 + len(cmds)
    assert lines[-1].startswith("load b: shed by rule peak until ")
    assert lines[0] == ("load a: restore by rule safe-state: start-up: every load to its "
                        "safe state")


def test_rule_status() -> None:
    h = House(FOUR + PEAK.format(limit=10), base_kw=3.0)
    h.step()
    h.step()
    (status,) = h.engine.rule_status()
    assert status.id == "peak" and status.active and status.holding == ("b",)
    assert status.since == h.t


def test_a_new_override_expiry_is_commanded() -> None:
    h = House(load("a", "1 kW"))
    h.step()
    first = h.t + timedelta(minutes=5)
    h.engine.set_override(Override(load="a", action=LoadAction.SHED, until=first), h.t)
    assert [c.until for c in h.step()] == [first]
    assert h.step() == []
    later = h.t + timedelta(hours=1)
    h.engine.set_override(Override(load="a", action=LoadAction.SHED, until=later), h.t)
    assert [(c.action, c.until) for c in h.step()] == [(LoadAction.SHED, later)]
    assert h.engine.next_wakeup(h.t) == later


def test_naive_now_is_utc() -> None:
    h = House(load("a", "1 kW"))
    cmds = h.engine.evaluate(T0.replace(tzinfo=None))
    assert cmds[0].issued == T0
