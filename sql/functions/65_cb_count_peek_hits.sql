-- A callback request's whole rate-limit check in one round trip (issue 17): count one hit on
-- each (p_kinds, p_keys) counter (cb_count_hits), and read without counting the
-- (p_peek_kinds, p_peek_keys) counters (the failed-authentication ones, counted only once a
-- request fails). Rows: (kind, counted, hits in the window starting at p_start, hits in the
-- one starting at p_previous); a peeked counter with no row is absent (0, 0). Before, the
-- peek was a second statement in a second transaction beside the count, and PostgreSQL spent
-- four times as long planning it as running it (pg_stat_statements, docs/bench-callbacks.md);
-- as a PL/pgSQL function its plans are kept per connection.
CREATE OR REPLACE FUNCTION cb_count_peek_hits(p_kinds text[], p_keys text[],
                                              p_peek_kinds text[], p_peek_keys text[],
                                              p_start bigint, p_previous bigint)
RETURNS TABLE (kind text, counted boolean, hits integer, previous integer)
LANGUAGE plpgsql VOLATILE
-- See "Plain index scans" in docs/sql-functions.md.
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT c.kind, true, c.hits, c.previous
                   FROM cb_count_hits(p_kinds, p_keys, p_start, p_previous) c;
    RETURN QUERY
    SELECT r.kind, false,
           coalesce(max(r.hits) FILTER (WHERE r.window_start = p_start), 0)::integer,
           coalesce(max(r.hits) FILTER (WHERE r.window_start = p_previous), 0)::integer
      FROM rate_limit_counters r
      JOIN unnest(p_peek_kinds, p_peek_keys) AS u(k, v) ON r.kind = u.k AND r.key = u.v
     WHERE r.window_start IN (p_start, p_previous)
     GROUP BY r.kind;
END $$;
