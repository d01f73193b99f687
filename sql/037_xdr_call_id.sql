-- 037: what an operator needs to match an xDR with the carrier's CDR and a SIP trace: the
-- leg's SIP Call-ID (RFC 3261 8.1.1.4; the carrier's CDR carries it too) and the cbserver
-- process that ran the leg (server_nodes.instance_id; xdrs.node already names its node).
-- Both are NULL on the rows written before this migration, and call_id is NULL for a leg that
-- was never placed. Nullable columns without a default: adding them rewrites nothing and
-- holds the table's lock only for a moment.

ALTER TABLE xdrs
    ADD COLUMN call_id     text,
    ADD COLUMN instance_id uuid;

COMMENT ON COLUMN xdrs.call_id IS
    'SIP Call-ID of the leg''s INVITE dialog; NULL: leg never placed, or row older than migration 037';
COMMENT ON COLUMN xdrs.instance_id IS
    'server_nodes.instance_id of the cbserver process that ran the leg; NULL before migration 037';
COMMENT ON COLUMN xdrs.duration IS
    'Whole seconds from answer to end, rounded up (a started second counts); 0: never connected';
COMMENT ON COLUMN xdrs.charged_seconds IS
    'Seconds charged: the duration rounded up by the rate''s first and next intervals';
