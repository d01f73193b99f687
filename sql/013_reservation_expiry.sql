-- 013: a reservation also expires on its own, however alive its process: a call cannot last
-- longer than the maximum duration it was authorized for, so a hold still there well after
-- that (a session that ended without releasing it) stops counting and is purged.

ALTER TABLE balance_reservations ADD COLUMN expires_at timestamptz NOT NULL DEFAULT 'infinity';

CREATE INDEX balance_reservations_expires ON balance_reservations (expires_at);
