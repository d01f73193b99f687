-- 032: the rule for a live concurrency slot in one place, and the rate-limit count as a
-- function.
--
-- Before this, the rule stood twice: in cb_take_slot (031) and in the count query of
-- cbserver/db/limits_store.py. cb_slot_live is now the only statement of it; both use it.
--
-- The rate-limit count ran as a plain statement, planned afresh on every request:
-- pg_stat_statements showed PostgreSQL spending about as long planning it (0.16 ms) as
-- running it (0.18 ms). In a PL/pgSQL function its plan is kept per connection.

-- Whether a slot (its callback id, NULL while unbound, and when it was taken) is live:
-- unbound and taken at or after p_unbound_since; or bound to a callback whose session row is
-- not final and whose node is alive (seen within p_node_expiry seconds, not stopped); or bound
-- to a callback whose row is not written yet, and young. The session is looked up by primary
-- key: a join here would be planned once per connection, maybe while the tables are empty,
-- and that plan could then scan callback_sessions whole.
CREATE FUNCTION cb_slot_live(p_callback text, p_taken bigint, p_unbound_since bigint,
                             p_node_expiry integer)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    live boolean;
BEGIN
    IF p_callback IS NULL THEN
        RETURN p_taken >= p_unbound_since;
    END IF;
    SELECT c.status NOT IN ('ended', 'refused') AND EXISTS (
               SELECT 1 FROM server_nodes sn WHERE sn.instance_id = c.instance_id
                  AND sn.stopped_at IS NULL
                  AND sn.last_seen > now() - make_interval(secs => p_node_expiry))
      INTO live FROM callback_sessions c WHERE c.id = p_callback;
    IF NOT FOUND THEN
        RETURN p_taken >= p_unbound_since;
    END IF;
    RETURN live;
END $$;

-- The account's live slots (the rule above), for the gauge's in_use().
CREATE FUNCTION cb_count_slots(p_account text, p_unbound_since bigint, p_node_expiry integer)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM callback_slots s
     WHERE s.account_id = p_account
       AND cb_slot_live(s.callback_id, s.taken_at, p_unbound_since, p_node_expiry)
$$;

-- As in 031, with the rule now taken from cb_slot_live.
CREATE OR REPLACE FUNCTION cb_take_slot(p_slot uuid, p_account text, p_cap integer, p_now bigint,
                                        p_unbound_since bigint, p_node_expiry integer,
                                        p_callback text)
RETURNS TABLE (taken boolean, in_use integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s record;
    n integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(20, hashtext(p_account));
    FOR s IN SELECT slot_id, callback_id, taken_at FROM callback_slots
              WHERE account_id = p_account LOOP
        IF cb_slot_live(s.callback_id, s.taken_at, p_unbound_since, p_node_expiry) THEN
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

-- Add one hit to each (kind, key) counter of the window starting at p_start, and return each
-- counter's new hits with the hits of the window that started at p_previous beside them (0
-- when it had none), for the limiter's sliding window (cbserver/web/limits.py).
CREATE FUNCTION cb_count_hits(p_kinds text[], p_keys text[], p_start bigint, p_previous bigint)
RETURNS TABLE (kind text, hits integer, previous integer)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH hit AS (
        INSERT INTO rate_limit_counters AS r (kind, key, window_start, hits)
        SELECT u.k, u.v, p_start, 1 FROM unnest(p_kinds, p_keys) AS u(k, v)
        ON CONFLICT ON CONSTRAINT rate_limit_counters_pkey DO UPDATE SET hits = r.hits + 1
        RETURNING r.kind, r.key, r.hits)
    SELECT hit.kind, hit.hits, coalesce(p.hits, 0)
      FROM hit LEFT JOIN rate_limit_counters p
        ON p.kind = hit.kind AND p.key = hit.key AND p.window_start = p_previous;
END $$;
