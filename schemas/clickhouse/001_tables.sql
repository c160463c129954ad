-- Version 1: the figures the worker publishes and the deduplicated facts behind them.
--
-- Files in this folder are applied in order of their number at worker start-up, each once; the
-- numbers applied are recorded in `schema_migrations`. An applied file is never edited: a change
-- is a new file. Statements are separated by a semicolon at the end of a line.

-- Every cci-updates record. `version` rises strictly per (month, dimension, segment), so
-- `SELECT … FROM cci_segment_monthly FINAL` gives the current figures; older versions stay until
-- a background merge drops them.
CREATE TABLE IF NOT EXISTS cci_segment_monthly
(
    month Date COMMENT 'first day of the calendar month (in CCI_TIMEZONE)',
    dimension LowCardinality(String) COMMENT 'all, plan, product, region, extras, tenure, channel',
    segment String,
    tickets UInt64,
    active_users UInt64 COMMENT 'for channel segments: every active user of the month',
    cci Nullable(Float64) COMMENT 'tickets / active_users; NULL without active users',
    contact_rate_pct Nullable(Float64) COMMENT '100 × cci',
    version UInt64 COMMENT 'cci-updates version: the highest is the current figure',
    updated_at DateTime64(3, 'UTC') COMMENT 'when the worker published this version'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (dimension, segment, month)
-- A retried insert of the very same batch (the server wrote it, the answer was lost) is dropped.
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per active user and month: the activity that counted (earliest event time, then the
-- smallest segment tuple, as the stream decides) and the segments the user counted under.
-- Every later, better version of a user-month carries an earlier time, so the version is the time
-- counted backwards and FINAL keeps the winner whatever order the versions arrived in. (Two
-- versions with the same µs: ReplacingMergeTree keeps the later insert, which is the stream's
-- winner because the sink inserts each changelog partition in order.)
CREATE TABLE IF NOT EXISTS cci_monthly_active_users
(
    month Date,
    user_id String,
    active_at DateTime64(6, 'UTC') COMMENT 'event time of the activity that counted',
    plan LowCardinality(String),
    product LowCardinality(String),
    region LowCardinality(String),
    tenure LowCardinality(String) COMMENT 'new, 1-2m, 3-11m, 12m+ or unknown',
    extra Map(LowCardinality(String), String) COMMENT 'CCI_EXTRA_DIMENSIONS values',
    version UInt64 COMMENT '2^63 - active_at in µs: the earliest activity wins',
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(month)
ORDER BY (month, user_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per ticket_id. A resent ticket with an earlier created_at can move the ticket to
-- another month, so the key is the ticket alone (and the table is not partitioned by month:
-- FINAL only replaces rows within one partition).
CREATE TABLE IF NOT EXISTS cci_tickets
(
    ticket_id String,
    month Date,
    created_at DateTime64(6, 'UTC'),
    channel LowCardinality(String),
    plan LowCardinality(String),
    product LowCardinality(String),
    region LowCardinality(String),
    tenure LowCardinality(String),
    extra Map(LowCardinality(String), String),
    version UInt64 COMMENT '2^63 - created_at in µs: the earliest version wins',
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY ticket_id
SETTINGS non_replicated_deduplication_window = 1000;
