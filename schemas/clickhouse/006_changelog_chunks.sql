-- Version 6: dedup changelog chunks unpacked by ClickHouse.
--
-- The sink inserts each changelog chunk whole (one row: its JSON body) and these views unpack
-- it into cci_monthly_active_users and cci_tickets, with the rows the sink built in Python
-- before: the version is 2^63 - the event time in µs, as in 001. Turning every fact into a
-- Python row and then into Native columns held the worker's interpreter for ~3 µs per row
-- (docs/performance.md). The sink still validates each chunk before it is inserted.
-- `dimensions` is the attribute order of the chunk (plan, product, region, extras…, tenure;
-- tickets add the channel); `users` and `tickets` count the rows of the chunk.
CREATE TABLE IF NOT EXISTS cci_changelog_chunks
(
    month Date,
    dimensions Array(String),
    users UInt32,
    tickets UInt32,
    body String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS cci_monthly_active_users_from_chunks
TO cci_monthly_active_users AS
SELECT
    month,
    fact.1 AS user_id,
    fromUnixTimestamp64Micro(fact.2, 'UTC') AS active_at,
    fact.3[1] AS plan,
    fact.3[2] AS product,
    fact.3[3] AS region,
    fact.3[length(dimensions)] AS tenure,
    mapFromArrays(
        arraySlice(dimensions, 4, length(dimensions) - 4),
        arraySlice(fact.3, 4, length(dimensions) - 4)
    ) AS extra,
    toUInt64(9223372036854775808 - fact.2) AS version
FROM cci_changelog_chunks
ARRAY JOIN JSONExtract(body, 'a', 'Array(Tuple(String, Int64, Array(String)))') AS fact;

CREATE MATERIALIZED VIEW IF NOT EXISTS cci_tickets_from_chunks
TO cci_tickets AS
SELECT
    fact.1 AS ticket_id,
    fact.4 AS user_id,
    month,
    fromUnixTimestamp64Micro(fact.2, 'UTC') AS created_at,
    fact.3[length(dimensions) + 1] AS channel,
    fact.3[1] AS plan,
    fact.3[2] AS product,
    fact.3[3] AS region,
    fact.3[length(dimensions)] AS tenure,
    mapFromArrays(
        arraySlice(dimensions, 4, length(dimensions) - 4),
        arraySlice(fact.3, 4, length(dimensions) - 4)
    ) AS extra,
    toUInt64(9223372036854775808 - fact.2) AS version
FROM cci_changelog_chunks
ARRAY JOIN JSONExtract(body, 't', 'Array(Tuple(String, Int64, Array(String), String))') AS fact;
