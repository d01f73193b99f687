-- Revenue and minutes per destination per day (UTC days, by the leg's disconnect time).
-- Both legs count: legA's destination is the called-back number's prefix.
-- Parameters: from (inclusive), to (exclusive), account (NULL: every account).
SELECT (disconnect_time AT TIME ZONE 'UTC')::date          AS day,
       coalesce(prefix, '')                                 AS prefix,
       currency,
       count(*)                                             AS legs,
       count(*) FILTER (WHERE duration > 0)                 AS connected,
       round(sum(duration) / 60.0, 2)                       AS minutes,
       round(sum(charged_seconds) / 60.0, 2)                AS charged_minutes,
       sum(amount)                                          AS revenue
FROM xdrs
WHERE disconnect_time >= %(from)s AND disconnect_time < %(to)s
  AND (%(account)s::text IS NULL OR account_id = %(account)s::text)
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
