-- Version 2: the views analysts want first.

-- Current figures per segment and month with the change from the previous calendar month.
-- Segments that emptied (published once with zero tickets and users) are left out.
CREATE VIEW IF NOT EXISTS cci_segment_trend AS
SELECT
    month,
    dimension,
    segment,
    tickets,
    active_users,
    cci,
    contact_rate_pct,
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
        lagInFrame(month) OVER w AS lag_month,
        lagInFrame(toNullable(tickets)) OVER w AS lag_tickets,
        lagInFrame(toNullable(active_users)) OVER w AS lag_active_users,
        lagInFrame(cci) OVER w AS lag_cci
    FROM cci_segment_monthly FINAL
    WHERE tickets > 0 OR active_users > 0
    WINDOW w AS (PARTITION BY dimension, segment ORDER BY month
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
);

-- The same figures recounted from the deduplicated facts with a plain GROUP BY: an audit of the
-- stream, and the template for questions the published segments do not answer. A channel's
-- denominator is every active user of the month, as in cci-updates.
CREATE VIEW IF NOT EXISTS cci_segment_recount AS
SELECT
    month,
    dimension,
    segment,
    tickets,
    if(dimension = 'channel', month_active_users, segment_users) AS active_users,
    if(active_users > 0, tickets / active_users, NULL) AS cci,
    -- Ratio first, then × 100: the same float arithmetic as cci-updates.
    if(active_users > 0, 100 * (tickets / active_users), NULL) AS contact_rate_pct
FROM
(
    SELECT
        month,
        dimension,
        segment,
        sum(ticket_count) AS tickets,
        sum(user_count) AS segment_users,
        max(if(dimension = 'all', sum(user_count), 0)) OVER (PARTITION BY month)
            AS month_active_users
    FROM
    (
        SELECT month, pair.1 AS dimension, pair.2 AS segment, 0 AS ticket_count, count() AS user_count
        FROM cci_monthly_active_users FINAL
        ARRAY JOIN arrayConcat(
            [('all', 'all'), ('plan', plan), ('product', product), ('region', region),
             ('tenure', tenure)],
            arrayZip(mapKeys(extra), mapValues(extra))) AS pair
        GROUP BY month, dimension, segment
        UNION ALL
        SELECT month, pair.1 AS dimension, pair.2 AS segment, count() AS ticket_count, 0 AS user_count
        FROM cci_tickets FINAL
        ARRAY JOIN arrayConcat(
            [('all', 'all'), ('plan', plan), ('product', product), ('region', region),
             ('tenure', tenure), ('channel', channel)],
            arrayZip(mapKeys(extra), mapValues(extra))) AS pair
        GROUP BY month, dimension, segment
    )
    GROUP BY month, dimension, segment
);
