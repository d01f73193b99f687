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
--
-- Cost (session 9, docs/bench-callbacks.md): one scan of the balance's holds gives the sum,
-- the number of sessions, whether any has expired and the processes holding them, and
-- cb_node_alive is asked once per such process (a node or two), not once per hold row; only
-- when a hold is expired or of a dead process do the purge and the sum run again as before,
-- so the figures are those of the rows that survive the purge either way. The session's holds
-- are updated in place where the leg is already held (an upsert on the primary key) and
-- inserted only for a new leg, a leg no longer asked for deleted: the rows are then exactly
-- those the former delete-and-insert left, created_at included. The update changes no indexed
-- column (migration 049 dropped the unused indexes on expires_at and instance_id), so it is a
-- HOT update: no index entry written, where the delete and insert wrote four.
CREATE OR REPLACE FUNCTION cb_reserve(p_session text, p_account text, p_customer bigint,
                                      p_subordinate boolean, p_key text, p_expiry integer,
                                      p_expect_balance numeric, p_expect_credit numeric,
                                      p_expect_reserved numeric, p_expect_open integer,
                                      p_min_free numeric, p_spend text, p_legs text[],
                                      p_amounts numeric[], p_currency text,
                                      p_instance uuid, p_lifetime integer)
RETURNS TABLE (done boolean, balance numeric, credit_limit numeric, reserved numeric,
               open_calls integer)
LANGUAGE plpgsql VOLATILE
-- See "Plain index scans" in docs/sql-functions.md.
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    b numeric;
    cl numeric;
    r numeric;
    o integer;
    free numeric;
    stale boolean;
    nodes uuid[];
BEGIN
    IF p_subordinate THEN
        SELECT c.balance, c.credit_limit INTO b, cl FROM customers c WHERE c.id = p_customer FOR UPDATE;
    ELSE
        SELECT a.balance, a.credit_limit INTO b, cl FROM accounts a WHERE a.id = p_account FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % vanished', p_account USING ERRCODE = 'no_data_found';
    END IF;
    SELECT coalesce(sum(x.amount) FILTER (WHERE x.session_id <> p_session), 0),
           count(DISTINCT x.session_id) FILTER (WHERE x.session_id <> p_session),
           coalesce(bool_or(x.expires_at <= now()), false), array_agg(DISTINCT x.instance_id)
      INTO r, o, stale, nodes
      FROM balance_reservations x
     WHERE x.owner_key = p_key;
    IF NOT stale THEN
        SELECT EXISTS (SELECT 1 FROM unnest(nodes) AS i(id) WHERE NOT cb_node_alive(i.id, p_expiry))
          INTO stale;
    END IF;
    IF stale THEN
        DELETE FROM balance_reservations x
         WHERE x.owner_key = p_key
           AND (x.expires_at <= now() OR NOT cb_node_alive(x.instance_id, p_expiry));
        SELECT coalesce(sum(x.amount), 0), count(DISTINCT x.session_id) INTO r, o
          FROM balance_reservations x
         WHERE x.owner_key = p_key AND x.session_id <> p_session AND x.expires_at > now();
    END IF;
    free := CASE p_spend WHEN 'balance' THEN b
                         WHEN 'limit' THEN cl - b
                         WHEN 'prepaid' THEN coalesce(cl - b, -b)
                         WHEN 'postpaid' THEN cl - b END - r;
    IF (b = p_expect_balance AND cl IS NOT DISTINCT FROM p_expect_credit
        AND r = p_expect_reserved AND o = p_expect_open)
       OR (p_min_free IS NOT NULL AND (free IS NULL OR free >= p_min_free)) THEN
        DELETE FROM balance_reservations
         WHERE session_id = p_session AND leg::text <> ALL (p_legs);
        INSERT INTO balance_reservations AS x (session_id, leg, account_id, owner_key, amount,
                                               currency, instance_id, expires_at)
        SELECT p_session, v.leg, p_account, p_key, v.amount, p_currency, p_instance,
               now() + make_interval(secs => p_lifetime)
          FROM unnest(p_legs, p_amounts) AS v(leg, amount)
        ON CONFLICT ON CONSTRAINT balance_reservations_pkey DO UPDATE
           SET account_id = excluded.account_id, owner_key = excluded.owner_key,
               amount = excluded.amount, currency = excluded.currency,
               instance_id = excluded.instance_id, expires_at = excluded.expires_at,
               created_at = now();
        RETURN QUERY SELECT true, b, cl, r, o;
    ELSE
        RETURN QUERY SELECT false, b, cl, r, o;
    END IF;
END $$;
