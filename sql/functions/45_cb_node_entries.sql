-- cb_node_entries: the rating entries in force at node p_node, one per product, service and
-- access code. An entry's node is either a node name (server.node) or '*', an entry for any
-- node (migration 041); where a product has both for the same service and access code, the
-- one naming p_node wins. Access-code precedence (the caller's code, else '') is decided by
-- the caller (cbserver/billing/authorize.py choose_entry) over the rows returned here, so an
-- entry for the exact access code at any node beats an entry with an empty access code at
-- this node: the access code says which service is billed (WEBCALLBACK, CALLBACK_FAIL), the
-- node only where. Every reader of the rating list for a node goes through this function:
-- cb_account_for_call (authorization), ENTRIES_SQL (cbserver quote) and readiness.
--
-- SQL, STABLE: inlined into the calling query, so the product filter of the caller reaches
-- the index on rating_entries (product_id, service, node, access_code).
CREATE OR REPLACE FUNCTION cb_node_entries(p_node text)
RETURNS TABLE (product_id integer, service text, node text, access_code text, tariff_id integer,
               overdraft_protection boolean)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (e.product_id, e.service, e.access_code)
           e.product_id, e.service, e.node, e.access_code, e.tariff_id, e.overdraft_protection
      FROM rating_entries e
     WHERE e.node = p_node OR e.node = '*'
     ORDER BY e.product_id, e.service, e.access_code, e.node = '*'
$$;
