-- Callback outcomes by failure reason: each callback (session) once, classified by the first
-- leg that did not connect and its SIP cause, or 'connected' when both legs did.
-- Parameters: from (inclusive), to (exclusive), account (NULL: every account).
WITH sessions AS (
    SELECT session_id,
           min(trigger_mode)                                         AS mode,
           bool_or(leg = 'A' AND duration > 0)                       AS a_up,
           bool_or(leg = 'B' AND duration > 0)                       AS b_up,
           max(CASE WHEN leg = 'A' THEN coalesce(sip_code::text || ' ' || sip_reason, 'no answer') END) AS a_cause,
           max(CASE WHEN leg = 'B' THEN coalesce(sip_code::text || ' ' || sip_reason, 'not placed') END) AS b_cause,
           sum(amount)                                               AS amount
    FROM xdrs
    WHERE disconnect_time >= %(from)s AND disconnect_time < %(to)s
      AND (%(account)s::text IS NULL OR account_id = %(account)s::text)
    GROUP BY session_id
)
SELECT mode,
       CASE WHEN NOT a_up THEN 'legA failed'
            WHEN NOT b_up THEN 'legB failed'
            ELSE 'connected' END                                     AS outcome,
       CASE WHEN NOT a_up THEN coalesce(a_cause, 'no record')
            WHEN NOT b_up THEN coalesce(b_cause, 'not placed')
            ELSE '' END                                              AS reason,
       count(*)                                                      AS callbacks,
       sum(amount)                                                   AS charged
FROM sessions
GROUP BY 1, 2, 3
ORDER BY 1, 2, 4 DESC, 3;
