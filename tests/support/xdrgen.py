"""Many xDRs at once, generated inside PostgreSQL (``generate_series``), for the export test
and benchmark: ``n`` rows, two per callback, with their ended callback_sessions rows (the
cause the xDR list joins), spread over 30 days before 2026-07-01, 4 accounts, 3 destinations,
2 nodes, 3 causes."""

from __future__ import annotations

import psycopg2

SESSIONS = """
INSERT INTO callback_sessions (id, application, mode, account_id, phone, destination, status,
                               state, node, instance_id, created_at, updated_at)
SELECT 'gen' || g, 'Web callback', 'extended', 'acc' || (g %% 4), '5511999',
       (ARRAY['18185550123', '5511987654321', '442071234567'])[1 + g %% 3], 'ended',
       jsonb_build_object('status', 'ended', 'cause', jsonb_build_object(
           'code', (ARRAY['legb_hung_up', 'lega_busy', 'operator_hangup'])[1 + g %% 3])),
       'node' || (1 + g %% 2), '11111111-1111-1111-1111-111111111111',
       t, t
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT timestamptz '2026-07-01' - make_interval(secs => g * 2592000.0 / %(n)s)) AS at(t)
"""
XDRS = """
INSERT INTO xdrs (session_id, leg, account_id, customer_id, cli, cld, access_code, node,
                  tariff_name, prefix, peak, connect_time, disconnect_time, duration,
                  charged_seconds, amount, currency, sip_code, sip_reason, trigger_mode, call_id)
SELECT s.id, l.leg, s.account_id, 'cust' || (g %% 2), s.phone, s.destination, 'WEBCALLBACK', s.node,
       'Callback', left(s.destination, 2), true, s.created_at + interval '5 seconds',
       s.created_at + interval '5 seconds' + make_interval(secs => 30 + g %% 600), 30 + g %% 600,
       60 + g %% 600, round((30 + g %% 600) * 0.001, 5), 'USD', 200, 'remote hangup', 'extended',
       s.id || '-' || l.leg || '@trunk.example'
  FROM generate_series(1, %(n)s) g
  JOIN callback_sessions s ON s.id = 'gen' || g
 CROSS JOIN (VALUES ('A'), ('B')) AS l(leg)
"""


def generate(dsn: str, xdrs: int) -> None:
    """Insert ``xdrs`` xDRs (an even number) and their callbacks; ANALYZE the tables."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SESSIONS, {"n": xdrs // 2})
            cur.execute(XDRS, {"n": xdrs // 2})
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE xdrs")
            cur.execute("ANALYZE callback_sessions")
    finally:
        conn.close()
