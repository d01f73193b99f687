-- 042: the operator's console (issue 15, "Calls"): indexes for the xDR filters of
-- GET /v1/xdrs and its CSV export, and the hang-up requests of DELETE /v1/callbacks/{id}.
--
-- The xDR list is read newest first in keyset order (disconnect_time, id): each filter has an
-- index that gives that order after its equality (customer, node), or narrows the rows
-- (destination prefix: cld LIKE 'digits%', which a text_pattern_ops index serves whatever the
-- database's collation). The account filter already has xdrs_account_time (011). The index on
-- disconnect_time alone (011) is covered by (disconnect_time, id) and goes.
-- IF NOT EXISTS: on a large xdrs an operator may build these indexes beforehand with
-- CREATE INDEX CONCURRENTLY (same names; docs/admin-api.md), so the upgrade itself does not
-- hold the table's write lock while they build.

CREATE INDEX IF NOT EXISTS xdrs_time_id ON xdrs (disconnect_time, id);
DROP INDEX IF EXISTS xdrs_disconnect_time;
CREATE INDEX IF NOT EXISTS xdrs_customer_time ON xdrs (customer_id, disconnect_time, id);
CREATE INDEX IF NOT EXISTS xdrs_node_time ON xdrs (node, disconnect_time, id);
CREATE INDEX IF NOT EXISTS xdrs_cld_pattern ON xdrs (cld text_pattern_ops);

-- Why a callback ended (its status's cause code): the xDR filter "cause" and the outcomes
-- report read it; only final rows have one.
CREATE INDEX IF NOT EXISTS callback_sessions_cause
    ON callback_sessions ((state -> 'cause' ->> 'code'))
    WHERE status IN ('ended', 'refused');
-- The live callbacks list (every node's), newest first.
CREATE INDEX IF NOT EXISTS callback_sessions_live
    ON callback_sessions (created_at)
    WHERE status NOT IN ('ended', 'refused');

-- An operator's request to hang a live callback up. The node running it (instance_id: its
-- process, as callback_sessions.instance_id) polls for its pending requests, ends the
-- callback with the cause operator_hangup (both legs ended, both xDRs written) and sets
-- handled_at. One row per callback: asking again changes nothing (idempotent).
CREATE TABLE callback_hangups (
    session_id   text        PRIMARY KEY REFERENCES callback_sessions (id) ON DELETE CASCADE,
    instance_id  uuid        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text        NOT NULL DEFAULT '',
    handled_at   timestamptz
);

CREATE INDEX callback_hangups_pending ON callback_hangups (instance_id) WHERE handled_at IS NULL;

COMMENT ON TABLE callback_hangups IS
    'Operator hang-up requests: the owning node ends the callback with cause operator_hangup';
