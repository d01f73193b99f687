-- 041: rating-list entries for any node, and draining a node.
--
-- A rating entry's node is a node name (server.node) or '*': the entry applies at every node,
-- so a node can be added without copying each product's rating list for its name. Where a
-- product has both for one service and access code, the entry naming the node wins
-- (sql/functions/45_cb_node_entries.sql). '*' is not a valid node name (cbserver/config.py
-- refuses it), so the two can never be confused; an empty node stays refused, as before, so
-- that a provisioning file with the node left blank is an error rather than a catalog-wide
-- entry nobody meant.
COMMENT ON COLUMN rating_entries.node IS
    'Node name (server.node) the entry applies at, or ''*'' for any node (the named node wins)';

-- A node being drained (cbserver node drain NAME): it takes no new callback and reports
-- /readyz 503 so the balancer stops sending; calls in progress run to their end, or until
-- deadline (NULL: no deadline), when the node ends them. Keyed by node name, not process,
-- so a node restarted while drained stays out of rotation until cbserver node undrain.
-- Kept in the database so every node and CLI sees it; nodes read it with their heartbeat.
CREATE TABLE node_drains (
    node         text        PRIMARY KEY CHECK (node <> '*' AND length(btrim(node)) BETWEEN 1 AND 100),
    deadline     timestamptz,
    requested_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE node_drains IS 'Nodes being drained: no new callbacks, out of the balancer';
