"""The rule engine: readings and signals in, load commands out; pure and deterministic.

``Engine(rules, rng_seed=...)`` holds the state of each load and rule.  Its
owner feeds it (``observe`` snapshots, ``set_price``, ``set_dr_event``,
``set_override``, ``report`` actuator feedback) and calls ``evaluate(now)``,
which returns the :class:`~gateway.model.LoadCommand` s to send.  Nothing here
waits, reads a clock or does I/O other than logging each command: ``now`` is
an argument, and the same inputs, ``now`` values and seed give the same
commands.  ``next_wakeup(now)`` says when a deadline, hold time or staggered
restore falls due, so the owner can evaluate then even without new readings.

What decides a load's target, strongest first:

1. a manual override (``set_override``) until it expires;
2. start-up (the first evaluation) and stale meter data (no snapshot for
   ``stale_after``): the load's ``safe_state``; rules start over afterwards;
3. the fail-safe: a shed that reached its deadline (``max_shed``, shortened by
   the comfort budget) is restored, whatever the rules say, and the load is
   not shed by rules again for ``recovery``;
4. active ``restore`` rules: the load stays on;
5. active ``shed`` / ``peak_limit`` / ``limit`` / ``cycle`` rules: off beats
   a limit, a lower limit beats a higher one, the first rule in file order
   names the command;
6. otherwise on.

Whatever the target, a load is switched off only after ``min_on`` and on only
after ``min_off`` (the change waits; a shed is never deadlined before its
``min_off`` has passed, so the fail-safe is never delayed by it).  Restores
that end a rule's shed are delayed by a random time up to
``restore_delay`` (seeded RNG), never past the fail-safe deadline; restores
forced by the fail-safe, an override or stale data are immediate.

A limit (the ``limit`` action, a limit override) is not a shed and has no
deadline; a limit below the load's ``min_power`` is a shed.

Peak limiting sheds, among the eligible loads (on, past ``min_on``, not
recovering, within the comfort budget, no override), the lowest priority
first, and within a priority the fewest loads whose expected effect covers
the excess: the power the actuator reports, else the effect measured the last
time the load was switched alone (the change in import power ``settle``
later; trusted for an hour), else the rated power.  Sheds the meter cannot
show yet (younger than ``settle``) count as done, so one peak is not shed
twice; loads that the fail-safe or an override bring back in the same
evaluation count as back, so the limiter takes others off in the same
decision.  It gives loads back one at a time, once the meter shows every
earlier switch: the most important one with which import would stay under
``restore_below``.  It stays active while any load it took off is not back.

Loads not declared in the rule set can never be commanded: commands are only
made for the engine's own load list, and overrides for other names are refused.

Not supported: multi-stage loads, confirming that an actuator did what it was
told (``report`` takes its measured power only), a clock going backwards
(hold and dwell times then just take longer).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.model import (
    DemandResponseEvent,
    LoadAction,
    LoadCommand,
    LoadState,
    PriceSignal,
    Snapshot,
)
from gateway.rules.loads import LoadSpec
from gateway.rules.rulefile import Action, RuleSet, RuleSpec
from gateway.rules.state import Frame, Inputs, Missing

__all__ = ["Engine", "Override", "RuleStatus", "format_command"]

log = logging.getLogger(__name__)

Mode = Literal["on", "off", "limit"]
# What caused a target: "rule" sheds/limits (deadlined, restores staggered),
# "rule_on" a rule asking for on (cycle on-phase, limit at rated: not staggered),
# "release" no rule wants it off any more.
Kind = Literal["override", "startup", "safe", "failsafe", "rule", "rule_on", "release"]

#: How long a measured shed effect is trusted before rated power is used again.
EFFECT_TTL_S = 3600.0
_EPS = 1e-9


def _epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """A person's decision for one load, in force until ``until``."""

    load: str
    action: LoadAction  # SHED (off), RESTORE (on) or LIMIT (with limit_w)
    until: datetime
    limit_w: float | None = None
    reason: str = "manual override"
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleStatus:
    id: str
    active: bool
    since: datetime | None  # when it became active
    holding: tuple[str, ...]  # peak_limit: loads it keeps shed


@dataclass(slots=True)
class _Target:
    mode: Mode
    kind: Kind
    rule: str
    reason: str
    limit_w: float | None = None


@dataclass(slots=True)
class _Rule:
    spec: RuleSpec
    active: bool = False
    cond_since: float | None = None
    release_since: float | None = None
    activated: float | None = None
    held: list[str] = field(default_factory=list)  # peak_limit
    releasing: list[str] = field(default_factory=list)  # peak_limit: released, not yet on
    last_switch: float = -math.inf
    phase: dict[str, float] = field(default_factory=dict)  # cycle: per-load offset (s)
    static: list[_Load] = field(default_factory=list)  # selection before DR targeting


class _Load:
    """One load's runtime state; also what ``load.<name>.<attr>`` reads."""

    __slots__ = (
        "blocked_until", "changed", "deadline", "effect", "effect_at", "index", "kind",
        "limit_w", "measured_at", "measured_w", "mode", "off_log", "override", "reason",
        "recovery_until", "restore_at", "rule", "sent_until", "shed_start", "since", "spec",
        "switch_kw",
    )

    def __init__(self, spec: LoadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.mode: Mode | None = None  # None: never commanded
        self.kind: Kind | None = None
        self.limit_w: float | None = None
        self.since: float | None = None  # last on/off switch; None = unknown (dwell satisfied)
        self.changed: float | None = None  # last command of any kind
        self.rule = ""
        self.reason = "not commanded yet"
        self.shed_start: float | None = None  # start of the current rule shed
        self.deadline: float | None = None  # its fail-safe deadline
        self.restore_at: float | None = None  # staggered restore due
        self.recovery_until: float | None = None
        self.blocked_until: float | None = None  # a change waits for min_on / min_off
        self.off_log: deque[tuple[float, float | None]] = deque()  # rule sheds, for comfort
        self.effect: float | None = None  # kW, measured
        self.effect_at = -math.inf
        self.measured_w: float | None = None
        self.measured_at = -math.inf
        self.override: Override | None = None
        self.switch_kw = 0.0  # the expected import change of the last on/off switch
        self.sent_until: float | None = None  # ``until`` of the last command

    # ---------------------------------------------------------------- LoadView
    def attr(self, name: str, now: datetime) -> float | bool | str:
        now_s = _epoch(now)
        on = self.mode != "off"
        if name == "on":
            return on
        if name == "shed":
            return self.mode == "off"
        if name == "limited":
            return self.mode == "limit"
        if name == "overridden":
            return self.override is not None
        if name == "rated_kw":
            return self.spec.rated_kw
        if name == "limit_kw":
            if self.mode == "off":
                return 0.0
            return (self.limit_w if self.mode == "limit" and self.limit_w is not None
                    else self.spec.rated_power_w) / 1000.0
        if name == "power_kw":
            if self.measured_w is not None and now_s - self.measured_at <= 60.0:
                return self.measured_w / 1000.0
            if self.mode == "off":
                return 0.0
            if self.mode == "limit" and self.limit_w is not None:
                return self.limit_w / 1000.0
            return self.spec.rated_kw
        if name == "on_for":
            return now_s - self.since if on and self.since is not None else 0.0
        if name == "off_for":
            return now_s - self.since if not on and self.since is not None else 0.0
        raise Missing(name)

    # ----------------------------------------------------------------- helpers
    def estimate_kw(self, now_s: float) -> float:
        """What switching this load off (or back on) changes in the import power."""
        if (self.mode != "off" and self.measured_w is not None
                and now_s - self.measured_at <= 60.0):
            est = self.measured_w / 1000.0  # (while off it measures the off state)
        elif self.effect is not None and now_s - self.effect_at <= EFFECT_TTL_S:
            # At least a twentieth of rated power: a load that was idle when
            # measured stays a (last) candidate.
            est = max(self.effect, 0.05 * self.spec.rated_kw)
        else:
            est = self.spec.rated_kw
        if self.mode == "limit" and self.limit_w is not None:
            est = min(est, self.limit_w / 1000.0)
        return max(est, 0.0)

    def log_off(self, now_s: float) -> None:
        """A rule shed starts: remembered only for the comfort budget (bounded by its window)."""
        if self.spec.comfort is not None:
            self.off_log.append((now_s, None))

    def comfort_used(self, now_s: float) -> float:
        c = self.spec.comfort
        if c is None:
            return 0.0
        start = now_s - c.window_s
        while self.off_log and self.off_log[0][1] is not None and self.off_log[0][1] <= start:
            self.off_log.popleft()
        used = 0.0
        for a, b in self.off_log:
            end = now_s if b is None else b
            used += max(0.0, end - max(a, start))
        return used


class Engine:
    """Decides load commands from a :class:`RuleSet`; see the module docstring.

    ``tz`` overrides the rule set's ``[settings] timezone`` (default UTC) for
    ``time``, ``weekday`` ...; ``stale_after_s`` overrides ``[settings]
    stale_after``.  ``learn_effects=False`` always uses reported or rated power.
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        rng_seed: int = 0,
        inputs: Inputs | None = None,
        tz: tzinfo | None = None,
        stale_after_s: float | None = None,
        learn_effects: bool = True,
        log_commands: bool = True,
    ) -> None:
        self.inputs = inputs if inputs is not None else Inputs(seed=rng_seed)
        self._rng = random.Random(rng_seed)
        self._seed = rng_seed
        self._tz_override = tz
        self._stale_override = stale_after_s
        self.learn_effects = learn_effects
        self.log_commands = log_commands
        self._started = False
        self._probe: tuple[str, int, float, float] | None = None  # load, sign, t, import
        self._rules: list[_Rule] = []
        self._loads: dict[str, _Load] = {}
        self._install(rules)

    # ------------------------------------------------------------------ set-up
    def _install(self, rules: RuleSet) -> None:
        self.rules = rules
        s = rules.settings
        self.tz: tzinfo = self._tz_override or (ZoneInfo(s.timezone) if s.timezone else UTC)
        self.stale_after_s = self._stale_override or s.stale_after_s
        self.restore_delay_s = s.restore_delay_s
        self.settle_s = s.settle_s
        old = self._loads
        self._loads = {}
        for i, load_spec in enumerate(rules.loads):
            ld = old.get(load_spec.name)
            if ld is None:
                ld = _Load(load_spec, i)
            else:
                ld.spec = load_spec
                ld.index = i
            self._loads[load_spec.name] = ld
        old_rules = {r.spec.id: r for r in self._rules}
        self._rules = []
        for spec in rules.rules:
            prev = old_rules.get(spec.id)
            rt = _Rule(spec=spec)
            if prev is not None and prev.spec.action is spec.action:
                rt.active, rt.cond_since, rt.release_since = (prev.active, prev.cond_since,
                                                              prev.release_since)
                rt.activated, rt.last_switch = prev.activated, prev.last_switch
                rt.held = [n for n in prev.held if n in spec.loads]
                rt.releasing = [n for n in prev.releasing if n in spec.loads]
            if spec.action is Action.CYCLE:
                for name in spec.loads:
                    r = random.Random(f"{self._seed}:{spec.id}:{name}")
                    rt.phase[name] = r.random() * spec.period_s
            rt.static = [self._loads[n] for n in spec.loads if n in self._loads
                         and (spec.max_priority is None
                              or self._loads[n].spec.priority <= spec.max_priority)]
            self._rules.append(rt)
        self._release: dict[str, _Target] = {}
        for name, secs in rules.windows().items():
            self.inputs.require_window(name, secs)

    def reload(self, rules: RuleSet, now: datetime) -> list[LoadCommand]:
        """Swap in a new, already validated rule set.

        Loads and rules keep their state where the name / id stays.  A load
        that is no longer declared is restored if it was shed or limited (the
        returned commands, sent through its old actuator) and then forgotten.
        """
        now_s = _epoch(now)
        out: list[LoadCommand] = []
        keep = {spec.name for spec in rules.loads}
        for name, ld in self._loads.items():
            if name not in keep and ld.mode in ("off", "limit"):
                out.append(self._command(ld, now_s, LoadAction.RESTORE, None, "reload",
                                         "load removed from the rule files", None))
        self._install(rules)
        return out

    # ------------------------------------------------------------------ inputs
    def observe(self, snapshot: Snapshot) -> None:
        self.inputs.observe(snapshot)

    def set_price(self, signal: PriceSignal) -> None:
        self.inputs.set_price(signal)

    def set_dr_event(self, event: DemandResponseEvent, now: datetime) -> None:
        self.inputs.set_dr_event(event, now)

    def set_override(self, override: Override, now: datetime) -> str | None:
        """Put a load under manual control until ``override.until``.

        Returns None when accepted, else why not (to publish on the error topic):
        an unknown load, an expiry in the past, a limit without ``limit_w``.
        """
        ld = self._loads.get(override.load)
        if ld is None:
            return f"no load named {override.load!r} is configured"
        if override.until <= now:
            return "the override's expiry is not in the future"
        if override.action is LoadAction.LIMIT and (override.limit_w is None
                                                    or override.limit_w < 0):
            return "a limit override needs limit_w >= 0"
        ld.override = override
        return None

    def clear_override(self, load: str) -> bool:
        ld = self._loads.get(load)
        if ld is None or ld.override is None:
            return False
        ld.override = None
        return True

    def report(self, state: LoadState, now: datetime) -> None:
        """Actuator feedback at ``now``: the measured power of a load, where it has one
        (trusted for a minute; a load not configured is ignored)."""
        ld = self._loads.get(state.load)
        if ld is not None and state.power_w is not None:
            ld.measured_w = state.power_w
            ld.measured_at = _epoch(now)

    # ----------------------------------------------------------------- queries
    def load_states(self) -> tuple[LoadState, ...]:
        out = []
        for ld in self._loads.values():
            mode = ld.mode if ld.mode is not None else ld.spec.safe_state
            out.append(LoadState(
                load=ld.spec.name,
                on=mode != "off",
                since=_dt(ld.changed if ld.changed is not None else 0.0),
                override=ld.override is not None,
                reason=ld.reason,
                rule=ld.rule,
                limit_w=ld.limit_w if ld.mode == "limit" else None,
                until=(_dt(ld.deadline) if ld.mode == "off" and ld.deadline is not None
                       else ld.override.until if ld.override is not None else None),
                power_w=ld.measured_w,
            ))
        return tuple(out)

    def rule_status(self) -> tuple[RuleStatus, ...]:
        return tuple(
            RuleStatus(id=r.spec.id, active=r.active,
                       since=_dt(r.activated) if r.active and r.activated is not None else None,
                       holding=tuple(r.held))
            for r in self._rules
        )

    def next_wakeup(self, now: datetime) -> datetime | None:
        """The earliest time after ``now`` at which time alone may change a decision:
        a fail-safe deadline, a staggered restore, a hold or dwell time, an
        override's expiry, a price or DR event starting or ending.

        Not included: meter data turning stale and time-of-day conditions;
        evaluate on every snapshot and at least every few seconds as well.
        """
        now_s = _epoch(now)
        times: list[float] = []
        for ld in self._loads.values():
            if ld.mode == "off" and ld.deadline is not None:
                times.append(ld.deadline)
            for t in (ld.restore_at, ld.blocked_until, ld.recovery_until):
                if t is not None:
                    times.append(t)
            if ld.override is not None:
                times.append(_epoch(ld.override.until))
        for r in self._rules:
            if not r.active and r.cond_since is not None:
                times.append(r.cond_since + r.spec.hold_s)
            if r.active and r.release_since is not None:
                times.append(r.release_since + r.spec.until_hold_s)
        nxt = self.inputs.next_change(now_s)
        if nxt is not None:
            times.append(nxt)
        later = [t for t in times if t > now_s]
        return _dt(min(later)) if later else None

    # --------------------------------------------------------------- evaluate
    def evaluate(self, now: datetime) -> list[LoadCommand]:
        """Decide what changes at ``now`` (aware; naive is taken as UTC).

        Returns the commands, in load order; each names its rule and reason and
        is logged at INFO on ``gateway.rules.engine``.
        """
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        now_s = _epoch(now)
        inputs = self.inputs
        inputs.expire(now_s)
        for ld in self._loads.values():
            if ld.override is not None and _epoch(ld.override.until) <= now_s:
                ld.override = None
        frame = Frame(inputs, now, self.tz, self._loads)
        if self.learn_effects:
            self._learn(frame)
        age = inputs.age(now_s)
        stale = age is None or age > self.stale_after_s
        startup = not self._started
        self._started = True
        if stale or startup:
            for r in self._rules:
                r.active = False
                r.cond_since = r.release_since = r.activated = None
                r.held.clear()
                r.releasing.clear()
            targets = self._safe_targets(now_s, age, startup)
        else:
            for r in self._rules:
                self._update_rule(r, frame, now_s)
            targets = self._rule_targets(frame, now_s)
        cmds = self._apply(targets, now_s, startup)
        if self.learn_effects:
            self._probe_after(cmds, frame, now_s)
        return cmds

    # ----------------------------------------------------------------- rules
    def _update_rule(self, r: _Rule, frame: Frame, now_s: float) -> None:
        spec = r.spec
        if not r.active:
            if spec.when.test(frame):
                if r.cond_since is None:
                    r.cond_since = now_s
                if now_s - r.cond_since >= spec.hold_s:
                    r.active = True
                    r.activated = now_s
                    r.release_since = None
            else:
                r.cond_since = None
            return
        if spec.until is not None:
            release = spec.until.test(frame) is True
        else:
            release = spec.when.test(frame) is not True
        if spec.action is Action.PEAK_LIMIT and (r.held or r.releasing):
            # A peak limiter lets go of its loads one at a time (restore_below),
            # never all at once: import measured with them off says little.  It
            # also watches those on their (staggered) way back.
            release = False
        if release:
            if r.release_since is None:
                r.release_since = now_s
            if now_s - r.release_since >= spec.until_hold_s:
                r.active = False
                r.activated = None
                r.cond_since = None
                r.release_since = None
                r.held.clear()
                r.releasing.clear()
        else:
            r.release_since = None

    def _selection(self, r: _Rule, frame: Frame) -> list[_Load]:
        if not r.spec.dr_targets:
            return r.static
        classes = frame.dr_classes()
        if classes is None:
            return []
        if not classes:
            return r.static
        wanted = set(classes)
        return [ld for ld in r.static if not wanted.isdisjoint(ld.spec.classes)]

    def _safe_targets(self, now_s: float, age: float | None, startup: bool) -> dict[str, _Target]:
        if startup:
            why = "start-up: every load to its safe state"
        elif age is None:
            why = "no meter data yet: safe state"
        else:
            why = f"meter data stale ({age:.0f} s old): safe state"
        out: dict[str, _Target] = {}
        for name, ld in self._loads.items():
            if ld.override is not None:
                out[name] = self._override_target(ld.override)
            else:
                out[name] = _Target(mode=ld.spec.safe_state, kind="startup" if startup else "safe",
                                    rule="safe-state", reason=why)
        return out

    @staticmethod
    def _override_target(o: Override) -> _Target:
        if o.action is LoadAction.SHED:
            return _Target(mode="off", kind="override", rule="override", reason=o.reason)
        if o.action is LoadAction.LIMIT:
            return _Target(mode="limit", kind="override", rule="override", reason=o.reason,
                           limit_w=o.limit_w)
        return _Target(mode="on", kind="override", rule="override", reason=o.reason)

    def _can_shed(self, ld: _Load, now_s: float) -> bool:
        """May a rule start shedding this load now (it is on)?"""
        spec = ld.spec
        if ld.override is not None:
            return False
        if ld.recovery_until is not None and now_s < ld.recovery_until:
            return False
        if ld.since is not None and ld.mode != "off" and now_s - ld.since < spec.min_on_s:
            return False
        if spec.comfort is not None:
            left = spec.comfort.max_off_s - ld.comfort_used(now_s)
            if left < max(spec.min_off_s, 1.0):
                return False
        return True

    def _failsafe_due(self, ld: _Load, now_s: float) -> bool:
        return ld.mode == "off" and ld.deadline is not None and now_s >= ld.deadline

    @staticmethod
    def _failsafe_target(ld: _Load, now_s: float) -> _Target:
        minutes = (now_s - (ld.shed_start or now_s)) / 60
        return _Target(mode="on", kind="failsafe", rule="fail-safe",
                       reason=f"fail-safe: shed for {minutes:.0f} min, restored whatever the "
                              "rules say")

    def _rule_targets(self, frame: Frame, now_s: float) -> dict[str, _Target]:
        targets: dict[str, _Target] = {}
        for name, ld in self._loads.items():
            if ld.override is not None:
                targets[name] = self._override_target(ld.override)
            elif self._failsafe_due(ld, now_s):
                # Decided before the rules, so that peak limiting counts it back on.
                targets[name] = self._failsafe_target(ld, now_s)
        vetoed: dict[str, _Target] = {}
        for r in self._rules:
            if r.active and r.spec.action is Action.RESTORE:
                for ld in self._selection(r, frame):
                    vetoed.setdefault(ld.spec.name, _Target(
                        mode="on", kind="rule", rule=r.spec.id,
                        reason=r.spec.reason or f"kept on: {r.spec.when.source}"))
        intents: dict[str, _Target] = {}

        def propose(name: str, t: _Target) -> None:
            if name in targets or name in vetoed:
                return
            cur = intents.get(name)
            if cur is None or _stronger(t, cur):
                intents[name] = t

        for r in self._rules:
            if not r.active:
                continue
            spec = r.spec
            action = spec.action
            if action is Action.SHED:
                off = _Target(mode="off", kind="rule", rule=spec.id,
                              reason=spec.reason or spec.when.source)
                for ld in self._selection(r, frame):
                    name = ld.spec.name
                    if name in targets or name in vetoed:
                        continue
                    cur = intents.get(name)
                    if cur is None or cur.mode != "off":
                        intents[name] = off
            elif action is Action.LIMIT:
                assert spec.power is not None
                try:
                    value_kw = spec.power.number(frame)
                except Missing:
                    continue
                for ld in self._selection(r, frame):
                    propose(ld.spec.name, self._limit_target(ld, value_kw, spec))
            elif action is Action.CYCLE:
                assert spec.duty is not None
                try:
                    duty = spec.duty.number(frame)
                except Missing:
                    continue
                duty = min(max(duty, 0.0), 100.0)
                off_len = (1.0 - duty / 100.0) * spec.period_s
                why = spec.reason or f"duty cycle {duty:.0f} % of {spec.period_s / 60:g} min"
                cycle_off = _Target(mode="off", kind="rule", rule=spec.id, reason=why)
                cycle_on = _Target(mode="on", kind="rule_on", rule=spec.id, reason=why)
                for ld in self._selection(r, frame):
                    pos = (now_s + r.phase.get(ld.spec.name, 0.0)) % spec.period_s
                    propose(ld.spec.name, cycle_off if pos < off_len else cycle_on)
        # Peak limiting sees what the rules above already decided.
        peaks = [r for r in self._rules if r.active and r.spec.action is Action.PEAK_LIMIT]
        if peaks:
            ctx = _PeakContext(self, now_s, targets, intents)
            for r in peaks:
                self._peak(r, frame, now_s, targets, vetoed, intents, ctx)
        release = self._release
        for name, ld in self._loads.items():
            if name in targets:
                continue
            t = vetoed.get(name) or intents.get(name)
            if t is None:
                t = release.get(ld.rule)
                if t is None:
                    t = release[ld.rule] = _Target(mode="on", kind="release", rule=ld.rule,
                                                   reason="no rule sheds it any more")
            targets[name] = t
        return targets

    def _limit_target(self, ld: _Load, value_kw: float, spec: RuleSpec) -> _Target:
        s = ld.spec
        step = s.limit_step_w
        want = value_kw * 1000.0
        why = spec.reason or f"limit {value_kw:.2f} kW ({spec.power.source if spec.power else ''})"
        # Hysteresis of half a step: go up only for a clear step, down at once.
        if (ld.mode == "limit" and ld.limit_w is not None
                and ld.limit_w <= want < ld.limit_w + 1.5 * step):
            want = ld.limit_w
        q = round(math.floor(want / step + _EPS) * step, 3) if want > 0 else 0.0
        if q <= 0 or q < s.min_power_w:
            return _Target(mode="off", kind="rule", rule=spec.id,
                           reason=f"{why}: below the load's minimum")
        if q >= s.rated_power_w:
            return _Target(mode="on", kind="rule_on", rule=spec.id, reason=why)
        return _Target(mode="limit", kind="rule", rule=spec.id, reason=why, limit_w=q)

    def _peak(self, r: _Rule, frame: Frame, now_s: float, targets: dict[str, _Target],
              vetoed: dict[str, _Target], intents: dict[str, _Target],
              ctx: _PeakContext) -> None:
        spec = r.spec
        assert spec.limit is not None
        try:
            measured = frame.vals["import_power_kw"]
            limit = spec.limit.number(frame)
            restore_level = (spec.restore_below.number(frame) if spec.restore_below is not None
                             else 0.9 * limit)
        except (Missing, KeyError):
            measured = None
        selection = self._selection(r, frame)
        sel_names = {ld.spec.name for ld in selection}

        def keep(name: str) -> bool:
            ld = self._loads[name]
            if name not in sel_names or name in vetoed or ld.override is not None:
                return False
            # The fail-safe restored it: it is recovering and out of this rule's hands.
            return not (ld.mode != "off" and ld.recovery_until is not None
                        and now_s < ld.recovery_until)

        r.held = [n for n in r.held if keep(n)]
        r.releasing = [n for n in r.releasing if keep(n) and self._loads[n].mode == "off"
                       and n not in r.held]
        if measured is None or not isinstance(measured, float):
            self._hold(r, intents, "import power unknown: keeping the sheds", ctx)
            return
        # Sheds that may not show yet count as done when deciding to shed more;
        # restores are only decided once every shed shows (settled).
        pending = ctx.pending
        settled = measured - ctx.going_off_kw + ctx.coming_back_kw
        expected = settled - pending
        back = sum(self._loads[n].estimate_kw(now_s) for n in r.releasing)
        why = spec.reason or f"import {measured:.2f} kW over the limit {limit:.2f} kW"
        if not spec.reason and abs(expected + back - measured) >= 0.05:
            why = (f"import {measured:.2f} kW, {expected + back:.2f} kW with the switches "
                   f"under way, over the limit {limit:.2f} kW")
        if expected + back > limit + _EPS:
            # First keep off what is waiting to come back, least important first.
            for name in sorted(r.releasing, key=lambda n: (self._loads[n].spec.priority, n)):
                if expected + back <= limit + _EPS:
                    break
                r.releasing.remove(name)
                r.held.append(name)
                back -= self._loads[name].estimate_kw(now_s)
                r.last_switch = now_s
            excess = expected + back - limit
            if excess > _EPS:
                cands = [ld for ld in selection
                         if ld.mode != "off" and ld.spec.name not in r.held
                         and ld.spec.name not in vetoed and ld.spec.name not in targets
                         and not (ld.spec.name in intents
                                  and intents[ld.spec.name].mode == "off")
                         and self._can_shed(ld, now_s)]
                chosen = _fewest(cands, excess, now_s)
                if chosen:
                    r.held.extend(ld.spec.name for ld in chosen)
                    r.last_switch = now_s
        elif r.held and pending <= _EPS and now_s - r.last_switch >= self.settle_s:
            ready = [n for n in r.held if self._loads[n].mode != "off" or self._min_off_done(
                self._loads[n], now_s)]
            # The most important that fits under restore_below goes back first
            # (between equals, the bigger one).
            ready.sort(key=lambda n: (-self._loads[n].spec.priority,
                                      -self._loads[n].estimate_kw(now_s), n))
            for name in ready:
                if settled + back + self._loads[name].estimate_kw(now_s) <= restore_level + _EPS:
                    r.held.remove(name)
                    if self._loads[name].mode == "off":
                        r.releasing.append(name)
                    r.last_switch = now_s
                    break
        self._hold(r, intents, why, ctx)

    def _hold(self, r: _Rule, intents: dict[str, _Target], why: str,
              ctx: _PeakContext | None = None) -> None:
        if not r.held:
            return
        t = _Target(mode="off", kind="rule", rule=r.spec.id, reason=why)
        for name in r.held:
            cur = intents.get(name)
            if cur is None or cur.mode != "off":
                intents[name] = t
                if ctx is not None:
                    ctx.add_off(self._loads[name])

    def _min_off_done(self, ld: _Load, now_s: float) -> bool:
        return ld.since is None or now_s - ld.since >= ld.spec.min_off_s

    def _pending(self, now_s: float) -> float:
        """What sheds the meter may not show yet will take off the import.

        Restores are left out on purpose: counting one the meter already shows
        would make the rule shed again at once.  A restore that pushes import
        over the limit is seen, and answered, after it shows.
        """
        last = self.inputs.last_received
        total = 0.0
        for ld in self._loads.values():
            if ld.since is None or ld.changed is None:
                continue
            if last is not None and last >= ld.changed + self.settle_s:
                continue
            if ld.changed < now_s - self.settle_s - self.stale_after_s:
                continue
            if ld.since == ld.changed and ld.mode == "off":
                total += ld.switch_kw
        return total

    # ------------------------------------------------------------------ apply
    def _apply(self, targets: dict[str, _Target], now_s: float, startup: bool) -> list[LoadCommand]:
        out: list[LoadCommand] = []
        for name, ld in self._loads.items():
            t = targets[name]
            spec = ld.spec
            ld.blocked_until = None
            # The fail-safe comes before the rules (an override or a safe state
            # "off" takes the shed over instead, and clears its deadline).
            if (self._failsafe_due(ld, now_s) and t.kind != "failsafe"
                    and not (t.mode == "off" and t.kind in ("override", "safe"))):
                t = self._failsafe_target(ld, now_s)
            if ld.mode is None:
                out.append(self._switch(ld, t, now_s))
                continue
            if t.mode == "off":
                ld.restore_at = None
                if ld.mode == "off":
                    self._continue_off(ld, t, now_s, out)
                    continue
                if t.kind in ("rule",) and not self._can_shed(ld, now_s):
                    if (ld.since is not None and now_s - ld.since < spec.min_on_s
                            and ld.override is None):
                        ld.blocked_until = ld.since + spec.min_on_s
                    continue
                if ld.since is not None and now_s - ld.since < spec.min_on_s:
                    ld.blocked_until = ld.since + spec.min_on_s
                    continue
                out.append(self._switch(ld, t, now_s))
                continue
            # on or limit
            if ld.mode == "off":
                if not self._min_off_done(ld, now_s):
                    assert ld.since is not None
                    ld.blocked_until = ld.since + spec.min_off_s
                    continue
                if t.kind in ("release", "rule") and ld.kind == "rule" and self.restore_delay_s > 0:
                    if ld.restore_at is None:
                        ld.restore_at = now_s + self._rng.random() * self.restore_delay_s
                        if ld.deadline is not None:
                            ld.restore_at = min(ld.restore_at, ld.deadline)
                    if now_s < ld.restore_at:
                        continue
                out.append(self._switch(ld, t, now_s))
                continue
            ld.restore_at = None
            if t.mode == "limit":
                if ld.mode != "limit" or ld.limit_w != t.limit_w:
                    out.append(self._switch(ld, t, now_s))
                else:
                    self._relabel(ld, t)
            elif ld.mode == "limit":
                out.append(self._switch(ld, t, now_s))
            else:
                if t.kind in ("override", "failsafe") or ld.kind in ("override", "startup",
                                                                     "safe"):
                    self._relabel(ld, t)
        if self.log_commands:
            for cmd in out:
                log.info("%s", format_command(cmd))
        return out

    def _relabel(self, ld: _Load, t: _Target) -> None:
        """Same state, new cause (no command: the actuator has nothing to do)."""
        ld.kind = t.kind
        ld.rule = t.rule
        ld.reason = t.reason

    def _continue_off(self, ld: _Load, t: _Target, now_s: float, out: list[LoadCommand]) -> None:
        """The load is off and should stay off; its cause may change."""
        was_rule = ld.kind == "rule" and ld.deadline is not None
        if t.kind == "rule":
            if was_rule:
                if ld.rule != t.rule:
                    ld.rule = t.rule
                    ld.reason = t.reason
                    out.append(self._command(ld, now_s, LoadAction.SHED, None, t.rule, t.reason,
                                             ld.deadline))
                    ld.changed = now_s
                return
            # Off for another reason until now (safe state, override, start-up):
            # from here on it is a rule's shed, with its own deadline.
            ld.shed_start = now_s
            ld.deadline = self._deadline(ld, now_s)
            ld.log_off(now_s)
            ld.kind, ld.rule, ld.reason = "rule", t.rule, t.reason
            ld.changed = now_s
            out.append(self._command(ld, now_s, LoadAction.SHED, None, t.rule, t.reason,
                                     ld.deadline))
            return
        if was_rule:
            self._end_rule_shed(ld, now_s)
        until = (_epoch(ld.override.until) if t.kind == "override" and ld.override is not None
                 else None)
        # Start-up and stale data are one cause ("safe-state"): no repeat command.
        changed = ld.rule != t.rule or until != ld.sent_until
        ld.kind, ld.rule, ld.reason = t.kind, t.rule, t.reason
        if changed:
            ld.changed = now_s
            out.append(self._command(ld, now_s, LoadAction.SHED, None, t.rule, t.reason, until))

    def _deadline(self, ld: _Load, now_s: float) -> float:
        spec = ld.spec
        span = spec.max_shed_s
        if spec.comfort is not None:
            span = min(span, spec.comfort.max_off_s - ld.comfort_used(now_s))
        return now_s + max(span, spec.min_off_s)

    def _end_rule_shed(self, ld: _Load, now_s: float) -> None:
        if ld.off_log and ld.off_log[-1][1] is None:
            start, _ = ld.off_log.pop()
            ld.off_log.append((start, now_s))
        ld.deadline = None
        ld.shed_start = None

    def _switch(self, ld: _Load, t: _Target, now_s: float) -> LoadCommand:
        prev = ld.mode
        if (prev == "off") != (t.mode == "off"):
            ld.switch_kw = ld.estimate_kw(now_s)
        if prev == "off" and ld.kind == "rule":
            self._end_rule_shed(ld, now_s)
        if t.mode == "off":
            action = LoadAction.SHED
            if prev != "off":
                ld.since = now_s
            if t.kind == "rule":
                ld.shed_start = now_s
                ld.deadline = self._deadline(ld, now_s)
                ld.log_off(now_s)
                until: float | None = ld.deadline
            else:
                ld.deadline = None
                until = (_epoch(ld.override.until) if t.kind == "override" and ld.override
                         else None)
            ld.limit_w = None
        else:
            action = LoadAction.LIMIT if t.mode == "limit" else LoadAction.RESTORE
            if prev == "off" or prev is None:
                ld.since = now_s
            ld.deadline = None
            ld.limit_w = t.limit_w if t.mode == "limit" else None
            until = (_epoch(ld.override.until) if t.kind == "override" and ld.override
                     else None)
            if t.kind == "failsafe":
                ld.recovery_until = now_s + ld.spec.recovery_s
        ld.mode = t.mode
        ld.kind = t.kind
        ld.rule = t.rule
        ld.reason = t.reason
        ld.restore_at = None
        ld.changed = now_s
        return self._command(ld, now_s, action, ld.limit_w, t.rule, t.reason, until)

    def _command(self, ld: _Load, now_s: float, action: LoadAction, limit_w: float | None,
                 rule: str, reason: str, until: float | None) -> LoadCommand:
        ld.sent_until = until
        return LoadCommand(
            load=ld.spec.name,
            action=action,
            reason=reason,
            rule=rule,
            until=_dt(until) if until is not None else None,
            limit_w=limit_w,
            actuator=ld.spec.actuator,
            issued=_dt(now_s),
        )

    # --------------------------------------------------------------- learning
    def _probe_after(self, cmds: Sequence[LoadCommand], frame: Frame, now_s: float) -> None:
        switches = [c for c in cmds if c.action is not LoadAction.LIMIT]
        if not switches:
            return
        imp = frame.vals.get("import_power_kw")
        # Safe-state commands go to loads whose state was unknown: nothing to learn.
        if (self._probe is not None or len(switches) > 1 or not isinstance(imp, float)
                or switches[0].rule == "safe-state"):
            self._probe = None
            return
        c = switches[0]
        self._probe = (c.load, -1 if c.action is LoadAction.SHED else 1, now_s, imp)

    def _learn(self, frame: Frame) -> None:
        if self._probe is None:
            return
        name, sign, t0, before = self._probe
        last = self.inputs.last_received
        if last is None or last < t0 + self.settle_s:
            if frame.now_s > t0 + self.settle_s + self.stale_after_s:
                self._probe = None
            return
        self._probe = None
        ld = self._loads.get(name)
        after = frame.vals.get("import_power_kw")
        if ld is None or not isinstance(after, float):
            return
        delta = (before - after) if sign < 0 else (after - before)
        if 0.0 <= delta <= 1.5 * ld.spec.rated_kw:
            ld.effect = delta if ld.effect is None else 0.5 * (ld.effect + delta)
            ld.effect_at = frame.now_s


class _PeakContext:
    """What every peak limiter of one evaluation needs to know about the others."""

    __slots__ = ("coming_back_kw", "going_off_kw", "now_s", "pending")

    def __init__(self, engine: Engine, now_s: float, targets: dict[str, _Target],
                 intents: dict[str, _Target]) -> None:
        self.now_s = now_s
        self.pending = engine._pending(now_s)
        loads = engine._loads
        # Loads other rules switch off now (the meter does not show that yet) ...
        self.going_off_kw = 0.0
        for name, t in intents.items():
            ld = loads[name]
            if t.mode == "off" and ld.mode != "off":
                self.going_off_kw += ld.estimate_kw(now_s)
        # ... and loads that come back on now whatever the rules say.
        self.coming_back_kw = 0.0
        for name, t in targets.items():
            ld = loads[name]
            if t.mode != "off" and ld.mode == "off":
                self.coming_back_kw += ld.estimate_kw(now_s)

    def add_off(self, ld: _Load) -> None:
        if ld.mode != "off":
            self.going_off_kw += ld.estimate_kw(self.now_s)


def _stronger(a: _Target, b: _Target) -> bool:
    """Whether intent ``a`` is more restrictive than ``b`` (off > limit > on)."""
    rank = {"off": 2, "limit": 1, "on": 0}
    if rank[a.mode] != rank[b.mode]:
        return rank[a.mode] > rank[b.mode]
    if a.mode == "limit" and a.limit_w is not None and b.limit_w is not None:
        return a.limit_w < b.limit_w
    return False


def _fewest(cands: Iterable[_Load], excess: float, now_s: float) -> list[_Load]:
    """The lowest-priority loads first; within a priority, the fewest that cover ``excess``."""
    by_prio: dict[int, list[_Load]] = {}
    for ld in cands:
        if ld.estimate_kw(now_s) > _EPS:
            by_prio.setdefault(ld.spec.priority, []).append(ld)
    chosen: list[_Load] = []
    remaining = excess
    for prio in sorted(by_prio):
        pool = sorted(by_prio[prio], key=lambda ld: ld.spec.name)
        while pool and remaining > _EPS:
            enough = [ld for ld in pool if ld.estimate_kw(now_s) >= remaining - _EPS]
            if enough:
                pick = min(enough, key=lambda ld: (ld.estimate_kw(now_s), ld.spec.name))
            else:
                pick = max(pool, key=lambda ld: (ld.estimate_kw(now_s), [-ord(c) for c in
                                                                         ld.spec.name]))
            pool.remove(pick)
            chosen.append(pick)
            remaining -= pick.estimate_kw(now_s)
        if remaining <= _EPS:
            break
    return chosen


def format_command(cmd: LoadCommand) -> str:
    """One log line: ``load boiler: shed by rule capacity-peak (until ...): reason``."""
    what = cmd.action.value
    if cmd.action is LoadAction.LIMIT and cmd.limit_w is not None:
        what = f"limit to {cmd.limit_w / 1000:.2f} kW"
    until = f" until {cmd.until.isoformat()}" if cmd.until is not None else ""
    return f"load {cmd.load}: {what} by rule {cmd.rule or '-'}{until}: {cmd.reason}"
