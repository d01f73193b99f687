-- The rule for a live concurrency slot (cbserver/db/limits_store.py), and the count of an
-- account's live slots by it.
--
-- Whether a slot (its callback id, NULL while unbound, and when it was taken) is live:
-- unbound and taken at or after p_unbound_since; or bound to a callback whose session row is
-- not final and whose node is alive (cb_node_alive); or bound to a callback whose row is not
-- written yet, and young. The session is looked up by primary key: a join here would be
-- planned once per connection, maybe while the tables are empty, and that plan could then
-- scan callback_sessions whole.
--
-- Two clocks meet here and are never compared with each other: a slot's age is in the calling
-- node's injected clock (p_taken and p_unbound_since are both its epoch seconds, so the web
-- layer's clock, a test's included, decides when an unbound slot dies), and its node's
-- liveness is in the database's clock (cb_node_alive), the clock last_seen is written in.
CREATE OR REPLACE FUNCTION cb_slot_live(p_callback text, p_taken bigint, p_unbound_since bigint,
                                        p_node_expiry integer)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    live boolean;
BEGIN
    IF p_callback IS NULL THEN
        RETURN p_taken >= p_unbound_since;
    END IF;
    SELECT c.status NOT IN ('ended', 'refused') AND cb_node_alive(c.instance_id, p_node_expiry)
      INTO live FROM callback_sessions c WHERE c.id = p_callback;
    IF NOT FOUND THEN
        RETURN p_taken >= p_unbound_since;
    END IF;
    RETURN live;
END $$;

-- The account's live slots (the rule above), for the gauge's in_use().
CREATE OR REPLACE FUNCTION cb_count_slots(p_account text, p_unbound_since bigint,
                                          p_node_expiry integer)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM callback_slots s
     WHERE s.account_id = p_account
       AND cb_slot_live(s.callback_id, s.taken_at, p_unbound_since, p_node_expiry)
$$;
