-- Take one of an account's concurrency slots, bound at once to callback p_callback (may be
-- NULL: bound later), in one round trip: under the account's advisory lock, drop the dead
-- slots, count the live ones (cb_slot_live), take one if below the cap. In READ COMMITTED
-- every statement inside a VOLATILE function takes a fresh snapshot, so what it reads after
-- taking the lock includes everything committed before. The slot's time is the database's
-- now() (see cb_slot_live: one clock for every node); an unbound slot is live for
-- p_start_timeout seconds of it.
--
-- Cost (session 9, docs/sql-functions.md): cb_node_alive is asked once per process holding a
-- bound, open slot, not once per slot through cb_slot_live: the loop states cb_slot_live's
-- rule (sql/functions/20) again with that cache, the same decision for every slot
-- (tests/integration/xdr/test_take_slot_liveness_pg.py checks the two agree).
DROP FUNCTION IF EXISTS cb_take_slot(uuid, text, integer, bigint, bigint, integer, text);
CREATE OR REPLACE FUNCTION cb_take_slot(p_slot uuid, p_account text, p_cap integer,
                                        p_start_timeout integer, p_node_expiry integer,
                                        p_callback text)
RETURNS TABLE (taken boolean, in_use integer)
LANGUAGE plpgsql VOLATILE
-- See "Plain index scans" in docs/sql-functions.md.
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    s record;
    n integer := 0;
    live boolean;
    v_open boolean;
    v_instance uuid;
    i integer;
    v_nodes uuid[] := '{}';
    v_alive boolean[] := '{}';
    v_now bigint := floor(extract(epoch FROM now()))::bigint;
    v_unbound_since bigint := v_now - p_start_timeout;
BEGIN
    PERFORM pg_advisory_xact_lock(20, hashtext(p_account));
    FOR s IN SELECT slot_id, callback_id, taken_at FROM callback_slots
              WHERE account_id = p_account LOOP
        -- cb_slot_live's rule, with cb_node_alive asked once per process (v_nodes, v_alive).
        -- The session by primary key, one slot at a time as there (no join to plan).
        IF s.callback_id IS NOT NULL THEN
            SELECT c.status NOT IN ('ended', 'refused'), c.instance_id INTO v_open, v_instance
              FROM callback_sessions c WHERE c.id = s.callback_id;
        END IF;
        IF s.callback_id IS NULL OR NOT FOUND THEN
            live := s.taken_at >= v_unbound_since;  -- unbound, or its session not written yet
        ELSIF NOT v_open THEN
            live := false;
        ELSE
            i := array_position(v_nodes, v_instance);
            IF i IS NULL THEN
                v_nodes := v_nodes || v_instance;
                v_alive := v_alive || cb_node_alive(v_instance, p_node_expiry);
                i := cardinality(v_nodes);
            END IF;
            live := v_alive[i];
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
    VALUES (p_slot, p_account, v_now, p_callback);
    RETURN QUERY SELECT true, n + 1;
END $$;
