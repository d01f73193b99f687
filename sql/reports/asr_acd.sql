-- ASR (answered / attempted, percent) and ACD (average duration of answered calls, seconds)
-- per destination prefix, over legB (the call to the destination).
-- Parameters: from (inclusive), to (exclusive), account (NULL: every account).
SELECT coalesce(prefix, '')                                          AS prefix,
       count(*)                                                      AS attempts,
       count(*) FILTER (WHERE duration > 0)                          AS answered,
       round(100.0 * count(*) FILTER (WHERE duration > 0) / count(*), 1) AS asr_percent,
       coalesce(round(avg(duration) FILTER (WHERE duration > 0), 1), 0)   AS acd_seconds
FROM xdrs
WHERE leg = 'B'
  AND disconnect_time >= %(from)s AND disconnect_time < %(to)s
  AND (%(account)s::text IS NULL OR account_id = %(account)s::text)
GROUP BY 1
ORDER BY 2 DESC, 1;
