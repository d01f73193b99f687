-- A callback request's admission in one round trip and one transaction (issue 17, item 1):
-- its rate-limit check (cb_count_peek_hits: one hit on each (p_kinds, p_keys) counter, the
-- failed-authentication counters (p_peek_kinds, p_peek_keys) read without counting) and,
-- only when no limit refuses it, the account's concurrency slot (cb_take_slot, with its
-- advisory lock and live-slot rule unchanged). Before, the slot was a second statement and a
-- second commit after the limiter's answer came back to the node.
--
-- The refusal is decided here from the caps passed in, with the limiter's arithmetic
-- (cbserver.callback.admission.sliding_count, in the same IEEE double operations in the same
-- order, so the node and the database never disagree): the previous window's hits weighted by
-- max(0, 1 - p_elapsed / p_size), plus this window's. A failure counter refuses when one more
-- failure would exceed its cap (p_peek_caps), a counted one when it is over its cap (p_caps).
-- A refused request takes no slot. The node still reads the counts to say which limit refused
-- and when to retry (retry_after), as before.
--
-- Rows: one per counted kind and one per peeked kind (kind, counted, hits in the window
-- starting at p_start, hits in the one starting at p_previous, over its cap), a peeked
-- counter without a row as (0, 0); then one row with kind NULL: whether a slot was taken
-- (NULL: none was asked for, p_account NULL, or a limit refused) and the account's live slots.
CREATE OR REPLACE FUNCTION cb_admit(p_kinds text[], p_keys text[], p_caps double precision[],
                                    p_peek_kinds text[], p_peek_keys text[],
                                    p_peek_caps double precision[],
                                    p_start bigint, p_previous bigint,
                                    p_elapsed double precision, p_size integer,
                                    p_slot uuid, p_account text, p_slot_cap integer,
                                    p_start_timeout integer, p_node_expiry integer,
                                    p_callback text)
RETURNS TABLE (kind text, counted boolean, hits integer, previous integer, over boolean,
               taken boolean, in_use integer)
LANGUAGE plpgsql VOLATILE
-- See "Plain index scans" in docs/sql-functions.md.
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
#variable_conflict use_column
DECLARE
    weight double precision := greatest(0.0::double precision,
                                        1.0::double precision - p_elapsed / p_size::double precision);
    refused boolean := false;
    c record;
    s record;
    ph integer;
    pp integer;
    o boolean;
BEGIN
    -- Commit without waiting for the WAL flush (cbserver/db/limits_store.py ASYNC_COMMIT
    -- says why that is safe for the admission's writes). Set here, local to the transaction,
    -- rather than by a SET LOCAL statement the node sends before the call: one statement less
    -- per callback (session 10). synchronous_commit is not among this function's SET clauses,
    -- so the setting outlives the call until the statement's own transaction ends (the
    -- connection's next statement commits synchronously, as before).
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR c IN
        SELECT h.kind, h.hits, h.previous,
               h.previous::double precision * weight + h.hits::double precision > u.cap AS over
          FROM cb_count_hits(p_kinds, p_keys, p_start, p_previous) h
          JOIN unnest(p_kinds, p_caps) AS u(k, cap) ON u.k = h.kind
    LOOP
        refused := refused OR c.over;
        RETURN QUERY SELECT c.kind, true, c.hits, c.previous, c.over, NULL::boolean, NULL::integer;
    END LOOP;
    -- The failure counters as cb_count_peek_hits reads them (its plan: the counters' primary
    -- key); a kind without a row is (0, 0).
    FOR i IN 1 .. coalesce(array_length(p_peek_kinds, 1), 0) LOOP
        SELECT coalesce(max(r.hits) FILTER (WHERE r.window_start = p_start), 0)::integer,
               coalesce(max(r.hits) FILTER (WHERE r.window_start = p_previous), 0)::integer
          INTO ph, pp
          FROM rate_limit_counters r
         WHERE r.kind = p_peek_kinds[i] AND r.key = p_peek_keys[i]
           AND r.window_start IN (p_start, p_previous);
        -- One failure more than the cap would pass: refused before any password is checked.
        o := pp::double precision * weight + ph::double precision + 1.0 > p_peek_caps[i];
        refused := refused OR o;
        RETURN QUERY SELECT p_peek_kinds[i], false, ph, pp, o, NULL::boolean, NULL::integer;
    END LOOP;
    IF p_account IS NULL OR refused THEN
        RETURN QUERY SELECT NULL::text, NULL::boolean, NULL::integer, NULL::integer,
                            refused, NULL::boolean, NULL::integer;
        RETURN;
    END IF;
    SELECT t.taken, t.in_use INTO s
      FROM cb_take_slot(p_slot, p_account, p_slot_cap, p_start_timeout, p_node_expiry,
                        p_callback) t;
    RETURN QUERY SELECT NULL::text, NULL::boolean, NULL::integer, NULL::integer,
                        false, s.taken, s.in_use;
END $$;
