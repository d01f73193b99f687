-- The xDR writer's first statement (cbserver/db/xdr_store.py, write_batch) as a function, so
-- that PostgreSQL keeps its plan per connection: as a plain statement it was planned on every
-- batch, four times as long as it ran (pg_stat_statements, docs/bench-callbacks.md). In the
-- caller's transaction: the legs of p_sessions already stored, then the accounts p_accounts
-- locked in id order, then the customers of their subordinate accounts locked in id order
-- (one order for every writer: no deadlock). Rows are tagged: ('x', session, leg),
-- ('a', id, NULL, customer, type, control, balance), ('c', id, NULL, NULL, NULL, NULL,
-- balance). A leg another writer commits while this waits for a lock is not seen; the insert
-- then fails on the unique key and the batch is retried, as before.
--
-- Plans (session 9, "Plain index scans" in docs/sql-functions.md): the plan is kept per
-- connection; made while xdrs was small (a fresh database, the writer's first batches) it
-- read xdrs by a sequential scan for the connection's life, a cost growing with every xDR
-- stored (10 ms per call at 100,000 legs). Every part selects by a key (xdrs_session_leg, the
-- accounts' and customers' primary keys), so plain index scans are always right. The rows,
-- the lock order (accounts by id, then customers by id) and the tags are unchanged.
-- plan_cache_mode = force_generic_plan: with the scans settled, the generic plan (an array
-- of unknown length) is estimated dearer than a plan for the call's one-element array, so
-- PostgreSQL would plan the statement afresh at every call (0.2 ms, pg_stat_statements).
CREATE OR REPLACE FUNCTION cb_xdr_read_and_lock(p_sessions text[], p_accounts text[])
RETURNS TABLE (tag text, key text, leg text, customer_id bigint, kind text, control text,
               balance numeric)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    WITH acc AS (SELECT a.id, a.customer_id, a.account_type, a.balance_control, a.balance
                   FROM accounts a WHERE a.id = ANY(p_accounts) ORDER BY a.id FOR UPDATE),
    cus AS (SELECT c.id, c.balance FROM customers c WHERE c.id IN
              (SELECT acc.customer_id FROM acc WHERE acc.balance_control = 'subordinate')
            ORDER BY c.id FOR UPDATE)
    SELECT 'x'::text, x.session_id, x.leg::text, NULL::bigint, NULL::text, NULL::text,
           NULL::numeric
      FROM xdrs x WHERE x.session_id = ANY(p_sessions)
    UNION ALL SELECT 'a', acc.id, NULL, acc.customer_id::bigint, acc.account_type,
                     acc.balance_control, acc.balance FROM acc
    UNION ALL SELECT 'c', cus.id::text, NULL, NULL, NULL, NULL, cus.balance FROM cus;
END $$;
