-- 036: check the callback_sessions rows written before 035 against its status CHECK. In its
-- own transaction: VALIDATE CONSTRAINT scans the table holding a SHARE UPDATE EXCLUSIVE lock
-- only, so nodes still writing status rows are not blocked while it runs (035's ALTER took
-- ACCESS EXCLUSIVE, but only for a moment, without a scan).

ALTER TABLE callback_sessions VALIDATE CONSTRAINT callback_sessions_status;
