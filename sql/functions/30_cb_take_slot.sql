-- Take one of an account's concurrency slots, bound at once to callback p_callback (may be
-- NULL: bound later), in one round trip: under the account's advisory lock, drop the dead
-- slots, count the live ones (cb_slot_live), take one if below the cap. In READ COMMITTED
-- every statement inside a VOLATILE function takes a fresh snapshot, so what it reads after
-- taking the lock includes everything committed before. The slot's time is the database's
-- now() (see cb_slot_live: one clock for every node); an unbound slot is live for
-- p_start_timeout seconds of it.
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
    v_now bigint := floor(extract(epoch FROM now()))::bigint;
    v_unbound_since bigint := v_now - p_start_timeout;
BEGIN
    PERFORM pg_advisory_xact_lock(20, hashtext(p_account));
    FOR s IN SELECT slot_id, callback_id, taken_at FROM callback_slots
              WHERE account_id = p_account LOOP
        IF cb_slot_live(s.callback_id, s.taken_at, v_unbound_since, p_node_expiry) THEN
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
