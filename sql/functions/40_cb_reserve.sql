-- Hold money for a session's legs, optimistically, in one round trip: the caller decided the
-- amounts from a balance it read without a lock (p_expect_*). Under the balance's row lock
-- this function reads the balance again, with what other live sessions hold and how many they
-- are. The decision stands, and replaces the session's earlier holds (done = true), when all
-- four equal what the caller expected (it is then exactly the one it would have made under the
-- lock), or when the caller said it stands for any free budget of at least p_min_free and the
-- fresh free budget is that much or unlimited. The free budget is what the balance allows
-- (p_spend, as cbserver.billing.authorize.spendable: 'balance' for a debit account, 'limit'
-- for a credit account, 'prepaid'/'postpaid' for a subordinate one's customer; NULL means no
-- limit) minus what the others hold. Otherwise nothing changes and the fresh figures come
-- back (done = false) for the caller to decide again. Holds of dead processes
-- (cb_node_alive) and expired ones are purged either way.
CREATE OR REPLACE FUNCTION cb_reserve(p_session text, p_account text, p_customer bigint,
                                      p_subordinate boolean, p_key text, p_expiry integer,
                                      p_expect_balance numeric, p_expect_credit numeric,
                                      p_expect_reserved numeric, p_expect_open integer,
                                      p_min_free numeric, p_spend text, p_legs text[],
                                      p_amounts numeric[], p_currency text,
                                      p_instance uuid, p_lifetime integer)
RETURNS TABLE (done boolean, balance numeric, credit_limit numeric, reserved numeric,
               open_calls integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    b numeric;
    cl numeric;
    r numeric;
    o integer;
    free numeric;
BEGIN
    IF p_subordinate THEN
        SELECT c.balance, c.credit_limit INTO b, cl FROM customers c WHERE c.id = p_customer FOR UPDATE;
    ELSE
        SELECT a.balance, a.credit_limit INTO b, cl FROM accounts a WHERE a.id = p_account FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % vanished', p_account USING ERRCODE = 'no_data_found';
    END IF;
    DELETE FROM balance_reservations x
     WHERE x.owner_key = p_key
       AND (x.expires_at <= now() OR NOT cb_node_alive(x.instance_id, p_expiry));
    SELECT coalesce(sum(x.amount), 0), count(DISTINCT x.session_id) INTO r, o
      FROM balance_reservations x
     WHERE x.owner_key = p_key AND x.session_id <> p_session AND x.expires_at > now();
    free := CASE p_spend WHEN 'balance' THEN b
                         WHEN 'limit' THEN cl - b
                         WHEN 'prepaid' THEN coalesce(cl - b, -b)
                         WHEN 'postpaid' THEN cl - b END - r;
    IF (b = p_expect_balance AND cl IS NOT DISTINCT FROM p_expect_credit
        AND r = p_expect_reserved AND o = p_expect_open)
       OR (p_min_free IS NOT NULL AND (free IS NULL OR free >= p_min_free)) THEN
        DELETE FROM balance_reservations WHERE session_id = p_session;
        INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, amount, currency,
                                          instance_id, expires_at)
        SELECT p_session, v.leg, p_account, p_key, v.amount, p_currency, p_instance,
               now() + make_interval(secs => p_lifetime)
          FROM unnest(p_legs, p_amounts) AS v(leg, amount);
        RETURN QUERY SELECT true, b, cl, r, o;
    ELSE
        RETURN QUERY SELECT false, b, cl, r, o;
    END IF;
END $$;
