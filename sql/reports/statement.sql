-- An account's statement: each callback with its two legs' charges and the balance after it.
-- balance_after is the charged balance once the call's last leg was applied (debit account:
-- money left; credit account or customer of a subordinate account: amount owed).
-- a_call_id, b_call_id: each leg's SIP Call-ID, to find it in the carrier's CDR ('' when the
-- leg was never placed, or its xDR predates migration 037).
-- Parameters: from (inclusive), to (exclusive), account (required).
SELECT to_char(max(disconnect_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ended,
       session_id,
       min(trigger_mode)                                            AS mode,
       max(cli)                                                     AS cli,
       max(cld)                                                     AS cld,
       coalesce(max(duration) FILTER (WHERE leg = 'A'), 0)          AS a_seconds,
       coalesce(max(amount) FILTER (WHERE leg = 'A'), 0)            AS a_amount,
       coalesce(max(duration) FILTER (WHERE leg = 'B'), 0)          AS b_seconds,
       coalesce(max(amount) FILTER (WHERE leg = 'B'), 0)            AS b_amount,
       sum(amount)                                                  AS amount,
       min(currency)                                                AS currency,
       (array_agg(balance_after ORDER BY id DESC))[1]               AS balance_after,
       coalesce(min(CASE WHEN duration = 0 AND sip_code IS NOT NULL
                         THEN leg || ': ' || sip_code::text || ' ' || sip_reason END), '') AS failure,
       coalesce(max(call_id) FILTER (WHERE leg = 'A'), '')          AS a_call_id,
       coalesce(max(call_id) FILTER (WHERE leg = 'B'), '')          AS b_call_id
FROM xdrs
WHERE disconnect_time >= %(from)s AND disconnect_time < %(to)s
  AND account_id = %(account)s::text
GROUP BY session_id
ORDER BY max(id);  -- ids are drawn under the balance row lock: the order balances changed in
