-- legA's authorization in one round trip when the node can guess (issue 17, item 1, session
-- 10). Reads the account exactly as cb_account_for_call does (its row is returned, so the
-- node has the fresh read whatever happens) and, when the node sent a decision made on an
-- earlier read of the same account (p_fingerprint: that read's cb_account_fingerprint, and
-- the balance it decided on as p_expect_*), stores that decision through cb_reserve, under the
-- balance's row lock and by cb_reserve's rules (the balance, credit limit, other sessions'
-- holds and their number as expected, or a free budget of at least p_min_free), only while
-- the fresh read fingerprints the same: nothing authorization decides on, apart from the
-- balance cb_reserve checks, changed since the node's read.
--
-- done: true, the decision is stored; false, cb_reserve refused it (the balance moved:
-- nothing stored); NULL, not tried (no guess, or the fingerprint differs: nothing stored).
-- Unless done is true, the node decides on the returned row and stores that decision by
-- cb_reserve (authz_store.reserve), exactly as after cb_account_for_call: the same two round
-- trips as before, never more. No row: no such account (nothing stored).
--
-- Before, legA always made both round trips and both commits (cb_account_for_call, then
-- cb_reserve); the guess is the node's last read of the account (cbserver/billing/authorize.py
-- Authorizer, a bounded per-node memory), which PostgreSQL checks here: no decision of the
-- node's own memory stands unless the database agrees it is still the one it would make.
CREATE OR REPLACE FUNCTION cb_authorize_leg(p_account text, p_session text, p_expiry integer,
                                            p_node text, p_codes text[], p_fingerprint text,
                                            p_customer bigint, p_subordinate boolean,
                                            p_key text, p_expect_balance numeric,
                                            p_expect_credit numeric, p_expect_reserved numeric,
                                            p_expect_open integer, p_min_free numeric,
                                            p_spend text, p_legs text[], p_amounts numeric[],
                                            p_currency text, p_instance uuid,
                                            p_lifetime integer)
RETURNS TABLE (id text, customer_id integer, product_id integer, account_type text,
               balance_control text, balance numeric, credit_limit numeric, status text,
               activation_date timestamptz, expiration_date timestamptz,
               avail_after_first_use_days integer, avail_after_last_use_days integer,
               first_usage timestamptz, last_usage timestamptz, password_hash text,
               internal boolean, voice boolean, customer_balance_control text,
               customer_balance numeric, customer_credit_limit numeric, customer_currency text,
               product_currency text, reserved numeric, open_calls bigint, entries json,
               fingerprint text, done boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    a record;
    stored boolean;
BEGIN
    SELECT * INTO a FROM cb_account_for_call(p_account, p_session, p_expiry, p_node, p_codes);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_fingerprint IS NOT NULL AND a.fingerprint = p_fingerprint THEN
        SELECT r.done INTO stored
          FROM cb_reserve(p_session, p_account, p_customer, p_subordinate, p_key, p_expiry,
                          p_expect_balance, p_expect_credit, p_expect_reserved, p_expect_open,
                          p_min_free, p_spend, p_legs, p_amounts, p_currency, p_instance,
                          p_lifetime) r;
    END IF;
    RETURN QUERY SELECT a.id, a.customer_id, a.product_id, a.account_type, a.balance_control,
                        a.balance, a.credit_limit, a.status, a.activation_date,
                        a.expiration_date, a.avail_after_first_use_days,
                        a.avail_after_last_use_days, a.first_usage, a.last_usage,
                        a.password_hash, a.internal, a.voice, a.customer_balance_control,
                        a.customer_balance, a.customer_credit_limit, a.customer_currency,
                        a.product_currency, a.reserved, a.open_calls, a.entries,
                        a.fingerprint, stored;
END $$;
