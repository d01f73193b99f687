-- Take one of an account's concurrency slots, bound at once to callback p_callback (may be
-- NULL: bound later), in one round trip: under the account's advisory lock, drop the dead
-- slots, count the live ones (cb_slot_live), take one if below the cap. In READ COMMITTED
-- every statement inside a VOLATILE function takes a fresh snapshot, so what it reads after
-- taking the lock includes everything committed before.
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
