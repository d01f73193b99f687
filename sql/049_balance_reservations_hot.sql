-- 049: balance holds rewritten in place (issue 17 item 1, session 9). cb_reserve
-- (sql/functions/40_cb_reserve.sql) used to delete a session's holds and insert them again at
-- every reservation, about 3.6 rows per callback, each with an entry in four indexes. It now
-- updates a leg's row in place. Such an update is HOT (no index entry written) only when no
-- indexed column changes and the page has room for the new version.
--
-- expires_at and instance_id change at every reservation (a later expiry; the node that
-- reserves), and their indexes serve no query: every reader of the holds selects by
-- owner_key (cb_reserve, cb_account_for_call, authz_store.LIVE_HOLDS, payments), by
-- session_id (the primary key: release, recovery, xDR writer) or by account_id (the admin
-- console, a few rows), and filters expires_at and instance_id among those rows. So both go.
-- The rows live only as long as their call: the table is small, and room on its pages costs
-- little.
DROP INDEX IF EXISTS balance_reservations_expires;
DROP INDEX IF EXISTS balance_reservations_instance;
ALTER TABLE balance_reservations SET (fillfactor = 70);
