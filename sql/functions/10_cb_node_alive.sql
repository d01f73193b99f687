-- cb_node_alive: whether a cbserver process (server_nodes.instance_id) counts as running: it
-- has not stopped and was seen within p_expiry seconds. The only statement of that rule: the
-- concurrency slots (cb_slot_live), the balance holds (cb_reserve, cb_account_for_call, and
-- LIVE_HOLDS / PREPARE_HOLD in cbserver/db/authz_store.py) all ask it.
--
-- The clock is the database's now(), the start of the calling transaction, because it is the
-- one clock every node shares: last_seen is written with now() by each node's heartbeat
-- (cbserver/db/pool.py) and balance_reservations.expires_at is set and compared with now(),
-- so a time stored by the database is only ever compared with the database's clock, and all
-- comparisons of one transaction see the same instant (cb_reserve's purge and its sum agree;
-- clock_timestamp() would move between them). The nodes' own clocks are never compared with
-- last_seen. (The one time a node sends, a concurrency slot's taken_at, comes from its
-- injected clock and is compared only with times from that clock: see cb_slot_live.)
--
-- PL/pgSQL, not SQL, so that its plan is kept per connection (an SQL function that cannot be
-- inlined is planned again by every statement that calls it). STABLE: it reads with the
-- snapshot of the statement that calls it, as the EXISTS it replaces did.
CREATE OR REPLACE FUNCTION cb_node_alive(p_instance uuid, p_expiry integer)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM server_nodes n
                    WHERE n.instance_id = p_instance AND n.stopped_at IS NULL
                      AND n.last_seen > now() - make_interval(secs => p_expiry));
END $$;
