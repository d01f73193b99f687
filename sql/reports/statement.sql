-- An account's statement: every leg with its charge and the balance right after it
-- (debit account: money left; credit account or customer of a subordinate account: amount owed).
-- Parameters: from (inclusive), to (exclusive), account (required).
SELECT to_char(disconnect_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS disconnected,
       session_id,
       leg,
       cli,
       cld,
       coalesce(prefix, '')      AS prefix,
       duration,
       charged_seconds,
       amount,
       currency,
       balance_after,
       coalesce(sip_code::text || ' ' || sip_reason, '') AS cause
FROM xdrs
WHERE disconnect_time >= %(from)s AND disconnect_time < %(to)s
  AND account_id = %(account)s::text
ORDER BY id;  -- ids are drawn under the balance row lock: the order balances changed in
