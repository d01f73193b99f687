-- An account as authorization reads it (cbserver/db/authz_store.py ACCOUNT_SQL's columns),
-- with what other live sessions hold on its balance (sum and number of sessions: the rows
-- cb_reserve counts under the lock; a hold counts while not expired and its node is alive,
-- cb_node_alive) and its product's voice rating entries in force at p_node (cb_node_entries:
-- the entry naming the node, else the one for any node '*') for the access codes p_codes (a
-- JSON array of [access_code, tariff_id, overdraft_protection]).
-- first_usage and last_usage are "first use or recharge" and "last use or recharge" (sql/033:
-- least/greatest skip NULLs), which is what authorize.account_refusal and usable_seconds count
-- from. A function so that its plan is kept per connection: planning this query took twice as
-- long as running it, and it runs twice per callback. The last column is the account's
-- cb_account_fingerprint, which legB's re-authorization hands to cb_reserve_again.
-- The processes holding on the balance are judged once each (cb_node_alive, in a first
-- statement over the holds), not once per hold row: a node or two against every call's rows
-- (session 9, docs/bench-callbacks.md); the sum counts the same rows.
DROP FUNCTION IF EXISTS cb_account_for_call(text, text, integer, text, text[]);
CREATE OR REPLACE FUNCTION cb_account_for_call(p_account text, p_session text, p_expiry integer,
                                               p_node text, p_codes text[])
RETURNS TABLE (id text, customer_id integer, product_id integer, account_type text,
               balance_control text, balance numeric, credit_limit numeric, status text,
               activation_date timestamptz, expiration_date timestamptz,
               avail_after_first_use_days integer, avail_after_last_use_days integer,
               first_usage timestamptz, last_usage timestamptz, password_hash text,
               internal boolean, voice boolean, customer_balance_control text,
               customer_balance numeric, customer_credit_limit numeric, customer_currency text,
               product_currency text, reserved numeric, open_calls bigint, entries json,
               fingerprint text)
LANGUAGE plpgsql STABLE
-- See "Plain index scans" in docs/sql-functions.md.
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    k text;
    live uuid[];
BEGIN
    SELECT CASE WHEN a.balance_control = 'subordinate' THEN 'customer:' || a.customer_id
                ELSE 'account:' || a.id END
      INTO k FROM accounts a WHERE a.id = p_account;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- MATERIALIZED: else the planner may push the test below the DISTINCT, once per row.
    WITH d AS MATERIALIZED (SELECT DISTINCT r.instance_id AS id FROM balance_reservations r
                             WHERE r.owner_key = k)
    SELECT coalesce(array_agg(d.id), '{}') INTO live FROM d WHERE cb_node_alive(d.id, p_expiry);
    RETURN QUERY
    SELECT a.id, a.customer_id, a.product_id, a.account_type, a.balance_control, a.balance,
           a.credit_limit, a.status, a.activation_date, a.expiration_date,
           a.avail_after_first_use_days, a.avail_after_last_use_days,
           least(a.first_usage, a.first_recharge), greatest(a.last_usage, a.last_recharge),
           a.password_hash, a.internal,
           v.voice, c.balance_control, c.balance, c.credit_limit, c.currency::text,
           p.currency::text, held.amount, held.sessions, en.entries,
           cb_account_fingerprint(a, c, p, v.voice, en.entries)
      FROM accounts a JOIN customers c ON c.id = a.customer_id
      JOIN products p ON p.id = a.product_id
     CROSS JOIN LATERAL (
           SELECT EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = a.product_id
                             AND s.service = 'voice') AS voice) AS v
     CROSS JOIN LATERAL (SELECT cb_voice_entries(a.product_id, p_node, p_codes) AS entries) AS en
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(r.amount), 0) AS amount, count(DISTINCT r.session_id) AS sessions
             FROM balance_reservations r
            WHERE r.owner_key = k AND r.session_id <> p_session AND r.expires_at > now()
              AND r.instance_id = ANY (live)) AS held
     WHERE a.id = p_account;
END $$;
