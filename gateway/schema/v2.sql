-- han-gateway store, schema version 2: the rule engine's audit trail.
--
-- One row per load decision (every command the engine issued, every override
-- and every refused signal), kept for the audit retention and pruned by ts.

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     REAL NOT NULL,                -- when it was decided (UTC epoch seconds)
    kind   TEXT NOT NULL,                -- command | override | signal | reload | dr_report
    load   TEXT NOT NULL DEFAULT '',     -- the load, or '' for signals and reloads
    action TEXT NOT NULL DEFAULT '',     -- shed | restore | limit | on | off | auto | refused | ...
    rule   TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',     -- rules | mqtt | web | openadr | ...
    detail TEXT NOT NULL DEFAULT '{}'    -- JSON with the rest (limit_w, until, actuator, ...)
);

CREATE INDEX audit_ts ON audit (ts);
