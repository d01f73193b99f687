-- 001: the core of the schema: the cbserver nodes sharing this database.
-- Each running cbserver process registers here and refreshes last_seen; work a node left
-- behind (balance reservations, callback sessions) is recognised as orphaned once its node
-- has not been seen for longer than the stated expiry.

CREATE TABLE server_nodes (
    node        text        NOT NULL,
    instance_id uuid        NOT NULL PRIMARY KEY,
    hostname    text        NOT NULL,
    pid         integer     NOT NULL,
    version     text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);

CREATE INDEX server_nodes_last_seen ON server_nodes (last_seen);

COMMENT ON TABLE server_nodes IS
    'One row per cbserver process run; last_seen is refreshed every few seconds';
