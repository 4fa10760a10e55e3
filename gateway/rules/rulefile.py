"""Rule files (TOML) to a validated, frozen :class:`RuleSet`.

A rule folder holds ``*.toml`` files, read in name order and checked as one
set: load names and rule ids are unique across the folder, and a rule may
name loads of any file.  Each file may have ``[settings]``, ``[[load]]``
tables (see :mod:`gateway.rules.loads`) and ``[[rule]]`` tables::

    [settings]                 # each key in at most one file of the folder
    timezone = "Europe/Brussels"   # for time, hour, weekday ... (default UTC)
    stale_after = "30s"        # no snapshot for this long: loads go to their safe state
    restore_delay = "2m"       # restores are spread over a random delay up to this
    settle = "5s"              # how long a switch takes to show on the meter

    [[rule]]
    id = "capacity-peak"       # unique; every command names it
    description = "..."
    when = "avg(import_power_kw, 1m) > 4.5 kW"   # condition (expression)
    for = "30s"                # ... that must hold this long before the rule acts
    until = "avg(import_power_kw, 5m) < 3 kW"    # release condition (default: not when)
    until_for = "1m"           # ... held this long (default 0s)
    action = "peak_limit"      # shed | peak_limit | limit | cycle | restore
    loads = ["boiler", "class:ev", "*"]   # names, classes, or every load (default "*")
    max_priority = 5           # only loads with priority <= 5
    dr_targets = false         # only loads of the DR event's target classes
    limit = "5 kW"             # peak_limit: keep import at or below this (expression)
    restore_below = "4 kW"     # peak_limit: restore a load when import would stay below
                               # this (expression; default 90 % of limit)
    power = "export_power_kw"  # limit: each selected load's power limit (expression)
    duty = "dr.duty_cycle_pct" # cycle: % of each period a load may run (expression)
    period = "30m"             # cycle: the period (default 30m)
    reason = "capacity tariff" # text carried by the commands (default: the when text)

Actions, while the rule is active:

- ``shed``: the selected loads off;
- ``peak_limit``: the fewest, lowest-priority selected loads off that bring
  import power to ``limit`` (by measured effect, else rated power); restored
  one at a time, most important first among those past their ``min_off``,
  once import would stay below ``restore_below`` with it back on.  The rule
  stays active while it keeps any load off (``until`` only ends it once it
  keeps none), since import measured with loads shed says little about
  import with them on;
- ``limit``: the selected loads run at most at ``power`` (off below their
  ``min_power``, fully on at or above their rated power);
- ``cycle``: the selected loads off for ``100 - duty`` % of each ``period``,
  staggered between loads;
- ``restore``: the selected loads on, whatever the shed/limit/cycle rules say
  (not over a manual override, stale data or the fail-safe).

Errors carry ``file:line:col`` (:class:`~gateway.errors.RuleSyntaxError`);
every problem in the folder is collected before raising.  A reload builds a
new set the same way: a bad folder raises and the caller keeps the old set.

Not supported: includes, per-rule time zones, rules that switch a load not
declared in the folder (refused at load time).
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigError
from gateway.rules._tomlpos import TomlPositions
from gateway.rules._validate import Problems, Table
from gateway.rules.ast import Dim
from gateway.rules.compile import Compiled
from gateway.rules.loads import LoadSpec, parse_load

__all__ = [
    "Action",
    "RuleSet",
    "RuleSpec",
    "Settings",
    "load_rule_dir",
    "load_rule_files",
    "parse_rule_texts",
]


class Action(enum.Enum):
    SHED = "shed"
    PEAK_LIMIT = "peak_limit"
    LIMIT = "limit"
    CYCLE = "cycle"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    timezone: str | None = None
    stale_after_s: float = 30.0
    restore_delay_s: float = 120.0
    settle_s: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    id: str
    action: Action
    when: Compiled
    hold_s: float = 0.0
    until: Compiled | None = None
    until_hold_s: float = 0.0
    loads: tuple[str, ...] = ()  # the selection resolved to load names, in folder order
    selection: tuple[str, ...] = ("*",)  # as written
    max_priority: int | None = None
    dr_targets: bool = False
    limit: Compiled | None = None
    restore_below: Compiled | None = None
    power: Compiled | None = None
    duty: Compiled | None = None
    period_s: float = 1800.0
    reason: str = ""
    description: str = ""
    file: str = ""

    def expressions(self) -> tuple[Compiled, ...]:
        return tuple(
            c for c in (self.when, self.until, self.limit, self.restore_below, self.power,
                        self.duty) if c is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSet:
    loads: tuple[LoadSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    settings: Settings = Settings()
    files: tuple[str, ...] = ()

    def load(self, name: str) -> LoadSpec | None:
        for spec in self.loads:
            if spec.name == name:
                return spec
        return None

    def windows(self) -> dict[str, float]:
        """Series the rules look back over, with the longest window each needs."""
        out: dict[str, float] = {}
        for r in self.rules:
            for c in r.expressions():
                for name, secs in c.windows:
                    out[name] = max(out.get(name, 0.0), secs)
        return out


RULE_KEYS = ("id", "description", "when", "for", "until", "until_for", "action", "loads",
             "max_priority", "dr_targets", "limit", "restore_below", "power", "duty", "period",
             "reason")
SETTINGS_KEYS = ("timezone", "stale_after", "restore_delay", "settle")
TOP_KEYS = ("settings", "load", "rule")
_ONLY = {
    "limit": Action.PEAK_LIMIT,
    "restore_below": Action.PEAK_LIMIT,
    "power": Action.LIMIT,
    "duty": Action.CYCLE,
    "period": Action.CYCLE,
}
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(slots=True)
class _Doc:
    file: str
    data: dict[str, Any]
    pos: TomlPositions


def _read(file: str, text: str, problems: Problems) -> _Doc | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        detail = _TOML_POS.sub("", msg).strip()
        problems.add(file, line, col, "(syntax)", f"not valid TOML: {detail}")
        return None
    return _Doc(file=file, data=data, pos=TomlPositions(text))


def _tables(doc: _Doc, key: str, problems: Problems) -> list[Table]:
    raw = doc.data.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        line, col = doc.pos.where((key,))
        problems.add(doc.file, line, col, key, f"expected [[{key}]] tables")
        return []
    return [Table(item, (key, i), doc.file, doc.pos, problems) for i, item in enumerate(raw)]


def _settings(docs: Sequence[_Doc], problems: Problems) -> Settings:
    values: dict[str, tuple[Any, str]] = {}
    for doc in docs:
        raw = doc.data.get("settings")
        if raw is None:
            continue
        if not isinstance(raw, dict):
            line, col = doc.pos.where(("settings",))
            problems.add(doc.file, line, col, "settings", "expected a [settings] table")
            continue
        t = Table(raw, ("settings",), doc.file, doc.pos, problems)
        got: dict[str, Any] = {}
        tz = t.string("timezone", default="")
        if tz:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                t.problem("timezone", "expected an IANA time zone name such as Europe/Brussels")
            else:
                got["timezone"] = tz
        for key in ("stale_after", "restore_delay", "settle"):
            if key in raw:
                hi = 86400.0 if key != "settle" else 600.0
                lo = 1.0 if key == "stale_after" else 0.0
                v = t.quantity(key, Dim.DURATION, default=None, lo=lo, hi=hi)
                if v is not None:
                    got[key] = v
        t.done(SETTINGS_KEYS)
        for key, v in got.items():
            if key in values and values[key][0] != v:
                t.problem(key, f"{key} is already set differently in {values[key][1]}")
            values[key] = (v, doc.file)
    defaults = Settings()
    return Settings(
        timezone=values["timezone"][0] if "timezone" in values else None,
        stale_after_s=values.get("stale_after", (defaults.stale_after_s, ""))[0],
        restore_delay_s=values.get("restore_delay", (defaults.restore_delay_s, ""))[0],
        settle_s=values.get("settle", (defaults.settle_s, ""))[0],
    )


def _select(t: Table, selection: tuple[str, ...], loads: Sequence[LoadSpec],
            declared: Collection[str]) -> tuple[str, ...]:
    chosen: set[str] = set()
    names = {spec.name for spec in loads}
    for i, item in enumerate(selection):
        if item in declared and item not in names:
            continue  # declared but invalid: already reported there
        if item == "*":
            chosen.update(names)
        elif item.startswith("class:"):
            cls = item[6:]
            matched = {spec.name for spec in loads if cls in spec.classes}
            if not matched:
                t.problem("loads", f"no load has class {cls!r}", sub=(i,))
            chosen.update(matched)
        elif item in names:
            chosen.add(item)
        else:
            known = ", ".join(sorted(names)) or "none"
            t.problem("loads", f"unknown load {item!r} (configured: {known}); a rule can only "
                               "switch loads declared with [[load]]", sub=(i,))
    return tuple(spec.name for spec in loads if spec.name in chosen)


def _rule(t: Table, loads: Sequence[LoadSpec], declared: Collection[str]) -> RuleSpec | None:
    names = declared
    rid = t.string("id", required=True)
    if rid and not _ID.match(rid):
        t.problem("id", "expected 1-64 letters, digits, '_', '.' or '-'")
    action_text = t.string("action", required=True)
    action: Action | None = None
    if action_text:
        try:
            action = Action(action_text)
        except ValueError:
            t.problem("action", f"expected one of {', '.join(a.value for a in Action)}, "
                                f"found {action_text!r}")
    when = t.expression("when", Dim.BOOL, names, required=True)
    hold = t.quantity("for", Dim.DURATION, default=0.0, lo=0.0, hi=86400.0)
    until = t.expression("until", Dim.BOOL, names)
    until_hold = t.quantity("until_for", Dim.DURATION, default=0.0, lo=0.0, hi=86400.0)
    selection = t.strings("loads", default=("*",))
    if not selection:
        t.problem("loads", 'expected at least one load, class:<name> or "*"')
    max_priority = t.integer("max_priority", default=None, lo=0, hi=1000)
    dr_targets = t.boolean("dr_targets", default=False)
    description = t.string("description")
    reason = t.string("reason")
    for key, only in _ONLY.items():
        if t.has(key) and action is not None and action is not only:
            t.problem(key, f"{key} is only for action = \"{only.value}\"", at_key=True)
    limit = restore_below = power = duty = None
    period = 1800.0
    if action is Action.PEAK_LIMIT:
        limit = t.expression("limit", Dim.POWER, names, required=True)
        restore_below = t.expression("restore_below", Dim.POWER, names)
    elif action is Action.LIMIT:
        power = t.expression("power", Dim.POWER, names, required=True)
    elif action is Action.CYCLE:
        duty = t.expression("duty", Dim.NUMBER, names, required=True)
        period = t.quantity("period", Dim.DURATION, default=1800.0, lo=60.0, hi=86400.0) or 1800.0
    resolved = _select(t, selection, loads, declared)
    t.done(RULE_KEYS)
    if not t.ok or action is None or when is None or hold is None or until_hold is None:
        return None
    return RuleSpec(
        id=rid,
        action=action,
        when=when,
        hold_s=hold,
        until=until,
        until_hold_s=until_hold,
        loads=resolved,
        selection=selection,
        max_priority=max_priority,
        dr_targets=dr_targets,
        limit=limit,
        restore_below=restore_below,
        power=power,
        duty=duty,
        period_s=period,
        reason=reason,
        description=description,
        file=t.file,
    )


def parse_rule_texts(texts: Iterable[tuple[str, str]]) -> RuleSet:
    """Validate rule files given as ``(file name, TOML text)`` pairs, as one set.

    Raises:
        RuleSyntaxError: every problem found, each with file:line:col.
    """
    problems = Problems()
    docs: list[_Doc] = []
    files: list[str] = []
    for file, text in texts:
        files.append(file)
        doc = _read(file, text, problems)
        if doc is not None:
            docs.append(doc)
    for doc in docs:
        for key in doc.data:
            if key not in TOP_KEYS:
                line, col = doc.pos.where((key,))
                problems.add(doc.file, line, col, key,
                             "unknown key (expected [settings], [[load]] or [[rule]])")
    settings = _settings(docs, problems)
    loads: list[LoadSpec] = []
    seen_loads: dict[str, Table] = {}
    declared: set[str] = set()
    for doc in docs:
        for t in _tables(doc, "load", problems):
            if isinstance(t.data.get("name"), str):
                declared.add(t.data["name"])
            spec = parse_load(t)
            if spec is None:
                continue
            if spec.name in seen_loads:
                t.problem("name", f"load {spec.name!r} is already declared at "
                                  f"{seen_loads[spec.name].place('name')}")
                continue
            seen_loads[spec.name] = t
            loads.append(spec)
    rules: list[RuleSpec] = []
    seen_rules: dict[str, Table] = {}
    for doc in docs:
        for t in _tables(doc, "rule", problems):
            rule = _rule(t, loads, declared)
            if rule is None:
                continue
            if rule.id in seen_rules:
                t.problem("id", f"rule id {rule.id!r} is already used at "
                                f"{seen_rules[rule.id].place('id')}")
                continue
            seen_rules[rule.id] = t
            rules.append(rule)
    problems.raise_if_any()
    return RuleSet(loads=tuple(loads), rules=tuple(rules), settings=settings, files=tuple(files))


def load_rule_files(paths: Iterable[Path]) -> RuleSet:
    """Read and validate rule files as one set.

    Raises:
        ConfigError: a file cannot be read.
        RuleSyntaxError: the files have problems (all of them are listed).
    """
    texts: list[tuple[str, str]] = []
    for p in paths:
        try:
            texts.append((str(p), p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError([(str(p), "(file)", f"cannot read: {detail}")]) from exc
    return parse_rule_texts(texts)


def load_rule_dir(directory: Path) -> RuleSet:
    """Read and validate every ``*.toml`` file in ``directory`` (name order) as one set.

    This is what ``han-gateway check``, ``rules simulate`` and a reload call;
    a reload swaps in the result only when this returns.

    Raises:
        ConfigError: the folder cannot be read.
        RuleSyntaxError: the files have problems (all of them are listed).
    """
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".toml" and p.is_file())
    except OSError as exc:
        raise ConfigError(
            [(str(directory), "(dir)", f"cannot read the rule folder: {exc.strerror or exc}")]
        ) from exc
    return load_rule_files(paths)
