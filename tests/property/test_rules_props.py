"""Rule engine properties over generated houses, rule sets and timelines.

10^4 scenarios in all (2500 + 2500 + 2500 + 1000 + 1500):

- no load stays shed past its fail-safe deadline;
- min on / min off times are never violated, whatever decides (rules, safe
  state, overrides, the fail-safe);
- peak limiting meets the limit whenever enough sheddable load exists;
- no rule set can switch a load that is not configured;
- the same seed gives the same commands.

A scenario is a house (base load plus loads that draw their rated power while
on, obeying each command at once), a rule set built from generated
parameters, and a timeline of steps: time passes (0.5 s to 3 min), the base
load changes, the meter reports or stays silent, a price or a manual override
arrives.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import RuleSyntaxError
from gateway.model import LoadAction, LoadCommand, PriceSignal, Reading, Snapshot
from gateway.rules import Engine, Override, RuleSet, parse_rule_texts

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class LoadP:
    name: str
    rated_kw: float
    priority: int
    min_on: int
    min_off: int
    max_shed: int
    recovery: int
    safe_off: bool
    comfort: tuple[int, int] | None


@dataclass(frozen=True)
class Step:
    dt: float
    base_kw: float
    observe: bool
    price: float | None
    override: tuple[int, str, int] | None  # load index, "shed"/"restore", seconds


def make_loads(seed: int, n: int) -> list[LoadP]:
    """Load parameters from a seed (drawn from Hypothesis, which shrinks it)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        min_off = rng.choice([0, 5, 30, 120, 300])
        max_off = rng.choice([None, None, 600, 1800])
        comfort = None
        if max_off is not None and max_off >= min_off:
            comfort = (max_off, max_off * rng.choice([2, 4]))
        out.append(LoadP(
            name=f"l{i}",
            rated_kw=rng.randint(1, 50) / 10,
            priority=rng.randint(0, 4),
            min_on=rng.choice([0, 5, 30, 120, 300]),
            min_off=min_off,
            max_shed=min_off + rng.choice([1, 60, 300, 900, 3600]),
            recovery=rng.choice([0, 60, 600]),
            safe_off=rng.random() < 0.5,
            comfort=comfort,
        ))
    return out


def make_steps(seed: int, n_loads: int, *, silent: bool = True,
               overrides: bool = True) -> list[Step]:
    """A timeline from a seed: drawing each step from Hypothesis costs more than
    the engine does, and 10^4 scenarios must fit in a minute."""
    rng = random.Random(seed)
    out: list[Step] = []
    base = rng.randint(0, 150) / 10
    for _ in range(rng.randint(5, 40)):
        if rng.random() < 0.4:
            base = rng.randint(0, 150) / 10
        override = None
        if overrides and rng.random() < 0.08:
            override = (rng.randrange(n_loads), rng.choice(["shed", "restore"]),
                        rng.choice([30, 300, 3600]))
        out.append(Step(
            dt=rng.choice([0.5, 1.0, 3.0, 10.0, 45.0, 180.0]),
            base_kw=base,
            observe=not silent or rng.random() < 0.9,
            price=rng.choice([None, None, 0.1, 0.3, 0.5]),
            override=override,
        ))
    return out


def load_toml(p: LoadP) -> str:
    out = (f'[[load]]\nname = "{p.name}"\nactuator = "mqtt:h/{p.name}"\n'
           f'rated_power = "{p.rated_kw} kW"\npriority = {p.priority}\n'
           f'min_on = "{p.min_on}s"\nmin_off = "{p.min_off}s"\nmax_shed = "{p.max_shed}s"\n'
           f'recovery = "{p.recovery}s"\nsafe_state = "{"off" if p.safe_off else "on"}"\n')
    if p.comfort is not None:
        out += f'comfort = {{ max_off = "{p.comfort[0]}s", window = "{p.comfort[1]}s" }}\n'
    return out


@st.composite
def scenario(draw: st.DrawFn, *, peak_only: bool = False) -> tuple[str, list[LoadP], float]:
    loads = make_loads(draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 5)))
    limit = draw(st.integers(20, 100)) / 10
    text = "".join(load_toml(p) for p in loads)
    text += (f'[settings]\nrestore_delay = "{draw(st.sampled_from([0, 10, 120]))}s"\n'
             f'settle = "{0 if peak_only else draw(st.sampled_from([0, 5]))}s"\n')
    text += (f'[[rule]]\nid = "peak"\nwhen = "import_power_kw > {limit} kW"\n'
             f'action = "peak_limit"\nlimit = "{limit} kW"\n'
             f'restore_below = "{limit * 0.8:.2f} kW"\n')
    if not peak_only:
        if draw(st.booleans()):
            text += ('[[rule]]\nid = "price"\nwhen = "price > 0.4"\nfor = "30s"\n'
                     'until = "price < 0.2"\naction = "shed"\n'
                     f'max_priority = {draw(st.integers(0, 4))}\n')
        if draw(st.booleans()):
            text += ('[[rule]]\nid = "cycle"\nwhen = "price >= 0.3"\naction = "cycle"\n'
                     f'duty = "{draw(st.sampled_from([0, 30, 70]))}"\nperiod = "10m"\n'
                     f'loads = ["{loads[0].name}"]\n')
        if draw(st.booleans()):
            text += ('[[rule]]\nid = "always"\nwhen = "true"\naction = "shed"\n'
                     f'loads = ["{loads[-1].name}"]\n')
    return text, loads, limit


class Run:
    """One scenario played through an engine, with the house obeying every command."""

    def __init__(self, rules: RuleSet, seed: int, *, learn: bool = True) -> None:
        self.engine = Engine(rules, rng_seed=seed, log_commands=False, learn_effects=learn)
        self.rated = {ld.name: ld.rated_kw for ld in rules.loads}
        self.on = {ld.name: True for ld in rules.loads}
        self.t = T0
        self.commands: list[LoadCommand] = []
        self.base = 0.0

    def import_kw(self) -> float:
        return self.base + sum(self.rated[n] for n, on in self.on.items() if on)

    def step(self, s: Step) -> list[LoadCommand]:
        self.t += timedelta(seconds=s.dt)
        self.base = s.base_kw
        if s.price is not None:
            self.engine.set_price(PriceSignal(start=self.t, end=self.t + timedelta(hours=1),
                                              price_per_kwh=s.price))
        if s.override is not None:
            i, what, secs = s.override
            names = list(self.rated)
            self.engine.set_override(Override(
                load=names[i % len(names)],
                action=LoadAction.SHED if what == "shed" else LoadAction.RESTORE,
                until=self.t + timedelta(seconds=secs)), self.t)
        if s.observe:
            self.engine.observe(Snapshot(
                meter="m", protocol="p", device_id=None, timestamp=self.t, received=self.t,
                readings=(Reading(id="1-0:1.7.0", value=round(self.import_kw(), 6), unit="kW"),
                          Reading(id="1-0:2.7.0", value=0.0, unit="kW"))))
        cmds = self.engine.evaluate(self.t)
        for c in cmds:
            self.on[c.load] = c.action is not LoadAction.SHED
        self.commands.extend(cmds)
        return cmds


@given(sc=scenario(), seed=st.integers(0, 3), tseed=st.integers(0, 2**32 - 1))
@settings(SETTINGS, max_examples=2500)
def test_no_load_stays_shed_past_its_fail_safe_deadline(
        sc: tuple[str, list[LoadP], float], seed: int, tseed: int) -> None:
    text, loads, _ = sc
    rules = parse_rule_texts([("p.toml", text)])
    steps = make_steps(tseed, len(loads))
    run = Run(rules, seed)
    max_shed = {p.name: p.max_shed for p in loads}
    deadline: dict[str, datetime] = {}
    for s in steps:
        cmds = run.step(s)
        touched = {c.load for c in cmds}
        for name, d in deadline.items():
            assert name in touched or run.t < d, f"{name} shed past {d} (now {run.t})"
        for c in cmds:
            deadline.pop(c.load, None)
            if c.action is LoadAction.SHED and c.rule not in ("override", "safe-state"):
                assert c.until is not None and c.issued is not None
                assert c.until - c.issued <= timedelta(seconds=max_shed[c.load])
                deadline[c.load] = c.until


@given(sc=scenario(), seed=st.integers(0, 3), tseed=st.integers(0, 2**32 - 1))
@settings(SETTINGS, max_examples=2500)
def test_min_on_and_min_off_are_never_violated(
        sc: tuple[str, list[LoadP], float], seed: int, tseed: int) -> None:
    text, loads, _ = sc
    rules = parse_rule_texts([("p.toml", text)])
    steps = make_steps(tseed, len(loads))
    run = Run(rules, seed)
    for s in steps:
        run.step(s)
    for p in loads:
        switches: list[tuple[datetime, bool]] = []
        for c in run.commands:
            if c.load != p.name:
                continue
            on = c.action is not LoadAction.SHED
            assert c.issued is not None
            if not switches or switches[-1][1] != on:
                switches.append((c.issued, on))
        # The first command only sets a state nobody knew (start-up).
        for (t1, on1), (t2, _) in itertools.pairwise(switches):
            held = (t2 - t1).total_seconds()
            assert held >= (p.min_on if on1 else p.min_off), (p, switches)


@given(sc=scenario(peak_only=True), seed=st.integers(0, 3), tseed=st.integers(0, 2**32 - 1))
@settings(SETTINGS, max_examples=2500)
def test_the_limit_is_met_whenever_enough_sheddable_load_exists(
        sc: tuple[str, list[LoadP], float], seed: int, tseed: int) -> None:
    text, loads, limit = sc
    rules = parse_rule_texts([("p.toml", text)])
    steps = make_steps(tseed, len(loads), silent=False, overrides=False)
    run = Run(rules, seed, learn=False)  # the house draws exactly rated power
    params = {p.name: p for p in loads}
    last_on: dict[str, datetime] = {}
    recovering_until: dict[str, datetime] = {}
    off_log: dict[str, list[tuple[datetime, datetime | None]]] = {p.name: [] for p in loads}
    for i, s in enumerate(steps):
        # What the meter will show: the house before this step's decisions.
        shown = s.base_kw + sum(params[n].rated_kw for n, on in run.on.items() if on)
        cmds = run.step(s)
        for c in cmds:
            assert c.issued is not None
            log = off_log[c.load]
            if c.action is LoadAction.SHED:
                log.append((c.issued, None))
            else:
                if log and log[-1][1] is None:
                    log[-1] = (log[-1][0], c.issued)
                last_on[c.load] = c.issued
                if c.rule == "fail-safe":
                    recovering_until[c.load] = c.issued + timedelta(
                        seconds=params[c.load].recovery)
        if i == 0:
            continue
        # The peak limiter's own account: what the meter showed, less what it
        # shed, plus what it (or the fail-safe) brought back.  Restores for other
        # reasons (a safe state ending) show at the next snapshot.
        projected = shown
        for c in cmds:
            if c.action is LoadAction.SHED:
                projected -= params[c.load].rated_kw
            elif c.rule in ("peak", "fail-safe"):
                projected += params[c.load].rated_kw
        if projected <= limit + 1e-6:
            continue

        def comfort_left(name: str) -> bool:
            p = params[name]
            if p.comfort is None:
                return True
            start = run.t - timedelta(seconds=p.comfort[1])
            used = sum(max(0.0, ((b or run.t) - max(a, start)).total_seconds())
                       for a, b in off_log[name])
            return p.comfort[0] - used >= max(p.min_off, 1)

        # Sheddable: on and not switched just now, past min_on, not recovering
        # from the fail-safe, within its comfort budget.
        switched_now = {c.load for c in cmds}
        eligible = [n for n, on in run.on.items() if on and n not in switched_now
                    and (run.t - last_on[n]).total_seconds() >= params[n].min_on
                    and run.t >= recovering_until.get(n, run.t)
                    and comfort_left(n)]
        assert not eligible, (run.t, projected, limit, eligible)


@given(
    names=st.lists(st.sampled_from(["a", "b", "c", "boiler", "ghost", "x1"]), min_size=1,
                   max_size=4),
    configured=st.lists(st.sampled_from(["a", "b", "boiler"]), min_size=1, max_size=3,
                        unique=True),
    ref=st.sampled_from(["a", "b", "c", "boiler", "ghost", "x1"]),
    action=st.sampled_from(["shed", "peak_limit", "cycle", "restore", "limit"]),
    override=st.sampled_from(["a", "b", "c", "boiler", "ghost", "x1"]),
    steps=st.lists(st.integers(0, 120), min_size=3, max_size=15),
)
@settings(SETTINGS, max_examples=1000)
def test_no_rule_set_can_switch_a_load_that_is_not_configured(
        names: list[str], configured: list[str], ref: str, action: str, override: str,
        steps: list[int]) -> None:
    text = "".join(f'[[load]]\nname = "{n}"\nactuator = "mqtt:h/{n}"\nrated_power = "1 kW"\n'
                   for n in configured)
    extra = {"peak_limit": 'limit = "1 kW"\n', "cycle": 'duty = "50"\n',
             "limit": 'power = "export_power_kw"\n'}.get(action, "")
    text += (f'[[rule]]\nid = "r"\nwhen = "load.{ref}.on or import_power_kw > 0"\n'
             f'action = "{action}"\nloads = {json.dumps(names)}\n{extra}')
    try:
        rules = parse_rule_texts([("p.toml", text)])
    except RuleSyntaxError as exc:
        unknown = {n for n in [*names, ref] if n not in configured}
        assert unknown, exc.problems
        assert all(any(repr(u) in m for u in unknown) for _, _, m in exc.problems)
        return
    assert set(names) <= set(configured) and ref in configured
    run = Run(rules, 0)
    refused = run.engine.set_override(Override(load=override, action=LoadAction.SHED,
                                               until=T0 + timedelta(hours=1)), T0)
    assert (refused is None) == (override in configured)
    for k, kw in enumerate(steps):
        run.step(Step(dt=1.0 + k, base_kw=kw / 10, observe=True, price=None, override=None))
    assert {c.load for c in run.commands} <= set(configured)
    assert {s.load for s in run.engine.load_states()} == set(configured)


@given(sc=scenario(), seed=st.integers(0, 2**32 - 1), tseed=st.integers(0, 2**32 - 1))
@settings(SETTINGS, max_examples=1500)
def test_the_same_seed_gives_the_same_commands(
        sc: tuple[str, list[LoadP], float], seed: int, tseed: int) -> None:
    text, loads, _ = sc
    rules = parse_rule_texts([("p.toml", text)])
    steps = make_steps(tseed, len(loads))
    a, b = Run(rules, seed), Run(rules, seed)
    for s in steps:
        assert a.step(s) == b.step(s)
    assert a.engine.load_states() == b.engine.load_states()
