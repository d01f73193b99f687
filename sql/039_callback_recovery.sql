-- 039: what a live node needs to end the calls of a node that died (crash recovery).
-- (038 is left to another change made at the same time.)
-- One row per callback with at least one answered leg, written by the node running it when
-- a leg answers and deleted when the callback ends normally. data holds, per answered leg,
-- its dialog (RFC 3261 12: Call-ID, tags, From/To, route set, remote target, CSeq), the
-- transport and trunk address the call reached, its answer time, and the xDR it would get
-- (account, tariff and the rate selected at its connect time), so that another node, or the
-- same node restarted, can send BYE on it and bill it up to the dead node's last heartbeat.
-- node is the configured node name (server.node): stable across restarts, so a restarted
-- node recognises its own leftovers; instance_id is the process (server_nodes.instance_id)
-- whose heartbeat says whether it is alive. A recovering node locks a row FOR UPDATE SKIP
-- LOCKED, so each callback is recovered once even with several survivors.

CREATE TABLE callback_recovery (
    session_id  text        PRIMARY KEY,
    node        text        NOT NULL,
    instance_id uuid        NOT NULL,
    data        jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX callback_recovery_instance ON callback_recovery (instance_id);

COMMENT ON TABLE callback_recovery IS
    'Answered legs of callbacks in progress, to end and bill them if their node dies';
