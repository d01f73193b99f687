-- 048: room on callback_recovery's pages for a row's second version (issue 17 item 1,
-- session 8). A row is written when the first leg answers and rewritten when the second does
-- (cbserver/db/recovery_store.py SAVE: data, node, instance_id, updated_at; only
-- instance_id is indexed and keeps its value), then deleted. A rewrite is a HOT update (no
-- new index entries) only if the page holding the row has room for the new version; rows are
-- about 1.7 kB, so full pages made a third of the rewrites non-HOT (measured: 426 HOT of 667).
-- Takes effect for pages filled from now on; the rows live only as long as their callback.
ALTER TABLE callback_recovery SET (fillfactor = 60);
