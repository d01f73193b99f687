-- The xDR writer's second statement (cbserver/db/xdr_store.py, write_batch) as a function, so
-- that PostgreSQL keeps its plan per connection: as a plain statement it was planned on every
-- batch, the largest planning cost per callback left (pg_stat_statements,
-- docs/bench-callbacks.md). In the caller's transaction, after cb_xdr_read_and_lock locked the
-- balance rows: insert the legs (p_rows: a JSON array of arrays in xdr_store.COLUMNS order; a
-- leg stored meanwhile by another writer raises unique_violation and the batch is retried),
-- apply to each account and customer balance exactly its delta, update first/last usage, and
-- release the legs' holds. Returns the (session, leg) keys inserted.
--
-- Plans (session 9, "Plain index scans" in docs/sql-functions.md): kept per connection, so a
-- plan made on near-empty tables must not scan accounts, customers or balance_reservations
-- sequentially for the connection's life (their dead row versions grow with every callback).
-- Each update and the release join a short array to a primary key: plain index scans.
-- plan_cache_mode = force_generic_plan: otherwise the generic plan, estimated for arrays of
-- unknown length, looks dearer than a custom one and the statement is planned at every call.
CREATE OR REPLACE FUNCTION cb_xdr_apply(p_rows jsonb, p_accounts text[], p_account_deltas numeric[],
                                        p_used timestamptz[], p_customers integer[],
                                        p_customer_deltas numeric[], p_sessions text[],
                                        p_legs char(1)[])
RETURNS TABLE (session_id text, leg text)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    WITH ins AS (
        INSERT INTO xdrs (session_id, leg, account_id, customer_id, cli, cld, access_code, node,
                          tariff_id, tariff_name, prefix, rate_id, rate_version, peak,
                          connect_time, disconnect_time, duration, charged_seconds, amount,
                          currency, sip_code, sip_reason, trigger_mode, call_id, instance_id,
                          balance_after)
        SELECT (e->>0)::text, (e->>1)::text, (e->>2)::text, (e->>3)::text, (e->>4)::text,
               (e->>5)::text, (e->>6)::text, (e->>7)::text, (e->>8)::bigint, (e->>9)::text,
               (e->>10)::text, (e->>11)::bigint, (e->>12)::integer, (e->>13)::boolean,
               (e->>14)::timestamptz, (e->>15)::timestamptz, (e->>16)::integer,
               (e->>17)::integer, (e->>18)::numeric, (e->>19)::text, (e->>20)::integer,
               (e->>21)::text, (e->>22)::text, (e->>23)::text, (e->>24)::uuid,
               (e->>25)::numeric
          FROM jsonb_array_elements(p_rows) AS e
        RETURNING xdrs.session_id AS s, xdrs.leg AS l),
    acc AS (
        UPDATE accounts a SET balance = a.balance + v.delta,
               first_usage = coalesce(a.first_usage, v.used),
               last_usage = CASE WHEN v.used IS NULL THEN a.last_usage
                                 ELSE greatest(a.last_usage, v.used) END
          FROM unnest(p_accounts, p_account_deltas, p_used) AS v(id, delta, used)
         WHERE a.id = v.id RETURNING 1),
    cus AS (
        UPDATE customers c SET balance = c.balance + v.delta
          FROM unnest(p_customers, p_customer_deltas) AS v(id, delta)
         WHERE c.id = v.id RETURNING 1),
    rel AS (
        DELETE FROM balance_reservations r USING unnest(p_sessions, p_legs) AS k(s, l)
         WHERE r.session_id = k.s AND r.leg = k.l RETURNING 1)
    SELECT ins.s, ins.l::text FROM ins;
END $$;
