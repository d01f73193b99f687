-- 031: the hot multi-statement transactions as server-side functions, one round trip each.
-- A callback used to cost about twenty transactions of three to six statements, each
-- statement a round trip from the server to PostgreSQL (BEGIN and COMMIT included). The two
-- that must run under a lock (taking a concurrency slot, holding money for a call) are now
-- PL/pgSQL functions called by one SELECT in autocommit: one round trip, one transaction.
-- In READ COMMITTED every statement inside a VOLATILE function takes a fresh snapshot, so
-- what a function reads after taking its lock includes everything committed before it.

-- Take one of an account's concurrency slots, bound at once to callback p_callback (may be
-- NULL: bound later). Same rule as cbserver/db/limits_store.py: under the account's
-- advisory lock, drop the dead slots, count the live ones, take one if below the cap.
CREATE FUNCTION cb_take_slot(p_slot uuid, p_account text, p_cap integer, p_now bigint,
                             p_unbound_since bigint, p_node_expiry integer, p_callback text)
RETURNS TABLE (taken boolean, in_use integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s record;
    live boolean;
    n integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(20, hashtext(p_account));
    -- Slot by slot (an account has at most a few), each session by its primary key: a join
    -- here would be planned once per connection, when the tables may still be empty, and
    -- that plan would then scan callback_sessions whole on every call.
    FOR s IN SELECT slot_id, callback_id, taken_at FROM callback_slots
              WHERE account_id = p_account LOOP
        IF s.callback_id IS NULL THEN
            live := s.taken_at >= p_unbound_since;
        ELSE
            SELECT c.status NOT IN ('ended', 'refused') AND EXISTS (
                       SELECT 1 FROM server_nodes sn WHERE sn.instance_id = c.instance_id
                          AND sn.stopped_at IS NULL
                          AND sn.last_seen > now() - make_interval(secs => p_node_expiry))
              INTO live FROM callback_sessions c WHERE c.id = s.callback_id;
            IF NOT FOUND THEN
                -- bound to a callback whose session row is not written yet: live while young
                live := s.taken_at >= p_unbound_since;
            END IF;
        END IF;
        IF live THEN
            n := n + 1;
        ELSE
            DELETE FROM callback_slots WHERE slot_id = s.slot_id;
        END IF;
    END LOOP;
    IF n >= p_cap THEN
        RETURN QUERY SELECT false, n;
        RETURN;
    END IF;
    INSERT INTO callback_slots (slot_id, account_id, taken_at, callback_id)
    VALUES (p_slot, p_account, p_now, p_callback);
    RETURN QUERY SELECT true, n + 1;
END $$;

-- Hold money for a session's legs, optimistically: the caller decided the amounts from a
-- balance it read without a lock (p_expect_*). Under the balance's row lock this function
-- reads the balance again, with what other live sessions hold and how many they are. The
-- decision stands, and replaces the session's earlier holds (done = true), when all four
-- equal what the caller expected (it is then exactly the one it would have made under the
-- lock), or when the caller said it stands for any free budget of at least p_min_free and
-- the fresh free budget is that much or unlimited. The free budget is what the balance allows
-- (p_spend, as cbserver.billing.authorize.spendable: 'balance' for a debit account, 'limit'
-- for a credit account, 'prepaid'/'postpaid' for a subordinate one's customer; NULL means no
-- limit) minus what the others hold. Otherwise nothing changes and the fresh figures come
-- back (done = false) for the caller to decide again. Dead processes' and expired holds are
-- purged either way.
CREATE FUNCTION cb_reserve(p_session text, p_account text, p_customer bigint,
                           p_subordinate boolean, p_key text, p_expiry integer,
                           p_expect_balance numeric, p_expect_credit numeric,
                           p_expect_reserved numeric, p_expect_open integer,
                           p_min_free numeric, p_spend text, p_legs text[], p_amounts numeric[], p_currency text,
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
       AND (x.expires_at <= now() OR NOT EXISTS (
            SELECT 1 FROM server_nodes n WHERE n.instance_id = x.instance_id
               AND n.stopped_at IS NULL AND n.last_seen > now() - make_interval(secs => p_expiry)));
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

-- An account as authorization reads it (cbserver/db/authz_store.py ACCOUNT_SQL's columns),
-- with what other live sessions hold on its balance (sum and number of sessions: the rows
-- cb_reserve counts under the lock) and its product's voice rating entries at p_node for
-- the access codes p_codes (a JSON array of [access_code, tariff_id, overdraft_protection]).
-- A function so that its plan is kept per connection: planning this query took twice as
-- long as running it, and it runs twice per callback.
CREATE FUNCTION cb_account_for_call(p_account text, p_session text, p_expiry integer,
                                    p_node text, p_codes text[])
RETURNS TABLE (id text, customer_id integer, product_id integer, account_type text,
               balance_control text, balance numeric, credit_limit numeric, status text,
               activation_date timestamptz, expiration_date timestamptz,
               avail_after_first_use_days integer, avail_after_last_use_days integer,
               first_usage timestamptz, last_usage timestamptz, password_hash text,
               internal boolean, voice boolean, customer_balance_control text,
               customer_balance numeric, customer_credit_limit numeric, customer_currency text,
               product_currency text, reserved numeric, open_calls bigint, entries json)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k text;
BEGIN
    SELECT CASE WHEN a.balance_control = 'subordinate' THEN 'customer:' || a.customer_id
                ELSE 'account:' || a.id END
      INTO k FROM accounts a WHERE a.id = p_account;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.id, a.customer_id, a.product_id, a.account_type, a.balance_control, a.balance,
           a.credit_limit, a.status, a.activation_date, a.expiration_date,
           a.avail_after_first_use_days, a.avail_after_last_use_days, a.first_usage,
           a.last_usage, a.password_hash, a.internal,
           EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = a.product_id
                      AND s.service = 'voice'),
           c.balance_control, c.balance, c.credit_limit, c.currency::text, p.currency::text,
           held.amount, held.sessions,
           (SELECT coalesce(json_agg(json_build_array(e.access_code, e.tariff_id,
                                                      e.overdraft_protection)), '[]')
              FROM rating_entries e
             WHERE e.product_id = a.product_id AND e.service = 'voice' AND e.node = p_node
               AND e.access_code = ANY(p_codes))
      FROM accounts a JOIN customers c ON c.id = a.customer_id
      JOIN products p ON p.id = a.product_id
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(r.amount), 0) AS amount, count(DISTINCT r.session_id) AS sessions
             FROM balance_reservations r JOIN server_nodes n ON n.instance_id = r.instance_id
            WHERE r.owner_key = k AND r.session_id <> p_session AND r.expires_at > now()
              AND n.stopped_at IS NULL
              AND n.last_seen > now() - make_interval(secs => p_expiry)) AS held
     WHERE a.id = p_account;
END $$;
