-- han-gateway store, schema version 1 (applied to an empty database).
--
-- Each gateway/schema/vN.sql migrates a database from version N-1 to N; the
-- store runs it in one transaction together with `PRAGMA user_version = N`.
-- Timestamps are UTC seconds since the epoch (REAL).

-- One row per (meter, reading id): keeps the text keys out of the big tables.
CREATE TABLE series (
    id      INTEGER PRIMARY KEY,
    meter   TEXT NOT NULL,
    reading TEXT NOT NULL,
    unit    TEXT,                      -- unit last seen for this reading
    UNIQUE (meter, reading)
);

-- Raw history, pruned after the raw retention.  The primary key is the
-- idempotency key (meter, reading, ts): the same value is never stored twice.
-- Pruning walks it per series, so no separate ts index slows the inserts.
CREATE TABLE raw (
    series INTEGER NOT NULL REFERENCES series (id),
    ts     REAL NOT NULL,
    num    REAL,                       -- numeric value, or NULL
    txt    TEXT,                       -- text value (or non-finite number), or NULL
    unit   TEXT,
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;

-- 15-minute aggregates of numeric values, bucket = floor(ts / 900) (aligned to
-- UTC quarter hours; CAST truncates, which is floor for the ts >= 0 the store
-- accepts).  Kept for years; never pruned.
CREATE TABLE agg (
    series   INTEGER NOT NULL REFERENCES series (id),
    bucket   INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    first_v  REAL NOT NULL,
    last_ts  REAL NOT NULL,
    last_v   REAL NOT NULL,
    min_v    REAL NOT NULL,
    max_v    REAL NOT NULL,
    sum_v    REAL NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (series, bucket)
) WITHOUT ROWID;

-- Aggregates follow raw inserts in the same transaction.  A trigger fires only
-- for rows actually inserted, so an ignored duplicate is never counted twice.
-- SET expressions see the row's old values (SQL semantics), so the CASEs
-- compare against the stored first_ts / last_ts.
CREATE TRIGGER raw_to_agg AFTER INSERT ON raw WHEN NEW.num IS NOT NULL
BEGIN
    INSERT INTO agg (series, bucket, first_ts, first_v, last_ts, last_v, min_v, max_v, sum_v, n)
    VALUES (NEW.series, CAST(NEW.ts / 900 AS INTEGER),
            NEW.ts, NEW.num, NEW.ts, NEW.num, NEW.num, NEW.num, NEW.num, 1)
    ON CONFLICT (series, bucket) DO UPDATE SET
        first_v  = CASE WHEN excluded.first_ts < first_ts THEN excluded.first_v ELSE first_v END,
        first_ts = min(first_ts, excluded.first_ts),
        last_v   = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last_v ELSE last_v END,
        last_ts  = max(last_ts, excluded.last_ts),
        min_v    = min(min_v, excluded.min_v),
        max_v    = max(max_v, excluded.max_v),
        sum_v    = sum_v + excluded.sum_v,
        n        = n + 1;
END;

-- Store-and-forward queue, one row per (destination, snapshot).  AUTOINCREMENT
-- so ids are never reused, even after the newest row was acknowledged: an
-- adapter's `after_id` cursor stays valid across acks and restarts.
CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    dest    TEXT NOT NULL,
    meter   TEXT NOT NULL,
    ts      REAL NOT NULL,
    payload TEXT NOT NULL,             -- JSON of Snapshot.to_json()
    UNIQUE (dest, meter, ts)           -- idempotency key
);

CREATE INDEX outbox_dest_id ON outbox (dest, id);

-- Small persistent settings (e.g. the raw prune horizon).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
