-- The rule for a live concurrency slot (cbserver/db/limits_store.py), and the count of an
-- account's live slots by it.
--
-- Whether a slot (its callback id, NULL while unbound, and when it was taken) is live:
-- unbound and taken at or after p_unbound_since; or bound to a callback whose session row is
-- not final and whose node is alive (cb_node_alive); or bound to a callback whose row is not
-- written yet, and young. The session is looked up by primary key: a join here would be
-- planned once per connection, maybe while the tables are empty, and that plan could then
-- scan callback_sessions whole. cb_take_slot (30) states this rule again in its loop, to ask
-- cb_node_alive once per process rather than once per slot (session 9); a change here must be
-- made there too (tests/integration/xdr/test_take_slot_liveness_pg.py compares the two).
--
-- One clock, the database's now(): a slot's taken_at is written with it (cb_take_slot),
-- p_unbound_since is derived from it (now() minus the start timeout), and a node's liveness
-- is judged by it (cb_node_alive, the clock last_seen is written in). Slots taken by one node
-- are judged by every other node, so a time each node read from its own clock would make
-- their disagreement (clock skew) decide whether another node's slot is still live.
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

-- The account's live slots (the rule above), for the gauge's in_use(); an unbound slot is
-- live for p_start_timeout seconds of the database's clock.
DROP FUNCTION IF EXISTS cb_count_slots(text, bigint, integer);  -- before: the caller's clock
CREATE OR REPLACE FUNCTION cb_count_slots(p_account text, p_start_timeout integer,
                                          p_node_expiry integer)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM callback_slots s
     WHERE s.account_id = p_account
       AND cb_slot_live(s.callback_id, s.taken_at,
                        floor(extract(epoch FROM now()))::bigint - p_start_timeout, p_node_expiry)
$$;
