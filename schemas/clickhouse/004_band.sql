-- Version 4: each figure's band against the contact-rate target range (CCI_TARGET_RANGE_PCT).
-- below, within or above the range; NULL without active users, and in rows written before this
-- version (a worker republishes every figure it owns when it starts, with its band).
ALTER TABLE cci_segment_monthly
    ADD COLUMN IF NOT EXISTS band LowCardinality(Nullable(String))
    COMMENT 'contact rate against CCI_TARGET_RANGE_PCT: below, within, above; NULL without users'
    AFTER contact_rate_pct;

-- cci_segment_trend (002) again, with the band next to the rate.
CREATE OR REPLACE VIEW cci_segment_trend AS
SELECT
    month,
    dimension,
    segment,
    tickets,
    active_users,
    cci,
    contact_rate_pct,
    band,
    if(lag_month = addMonths(month, -1), lag_tickets, NULL) AS previous_tickets,
    if(lag_month = addMonths(month, -1), lag_active_users, NULL) AS previous_active_users,
    if(lag_month = addMonths(month, -1), lag_cci, NULL) AS previous_cci,
    cci - previous_cci AS cci_change,
    if(previous_cci > 0, 100 * (cci / previous_cci - 1), NULL) AS cci_change_pct
FROM
(
    SELECT
        month,
        dimension,
        segment,
        tickets,
        active_users,
        cci,
        contact_rate_pct,
        band,
        lagInFrame(month) OVER w AS lag_month,
        lagInFrame(toNullable(tickets)) OVER w AS lag_tickets,
        lagInFrame(toNullable(active_users)) OVER w AS lag_active_users,
        lagInFrame(cci) OVER w AS lag_cci
    FROM cci_segment_monthly FINAL
    WHERE tickets > 0 OR active_users > 0
    WINDOW w AS (PARTITION BY dimension, segment ORDER BY month
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
);
