"""``cb_count_hits`` plans its counter upsert once per connection (issue 17 item 1, session 9).

With sequential and bitmap scans off (docs/sql-functions.md "Plain index scans"), PostgreSQL's
plan cache judged the generic plan of the upsert (arrays of any length) dearer than a custom
plan for the three elements every admission passes, and planned it again at every call: 0.13
ms of planning per callback in the benchmark's ``pg_stat_statements`` table. The function now
says ``plan_cache_mode = force_generic_plan``. ``auto_explain`` shows which plan ran: a
generic plan keeps the parameters (``$1``), a custom one has the call's values in it.
"""

from __future__ import annotations

import re

import psycopg2
import pytest

pytestmark = pytest.mark.integration

COUNT = "SELECT * FROM cb_count_hits(%s::text[], %s::text[], %s, %s)"


def plans_of_calls(dsn: str, calls: int) -> list[str]:
    """The upsert's plan (auto_explain, sent to this client) at each of ``calls`` calls."""
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on",
                        "log_level = 'notice'"):
            cur.execute(f"SET auto_explain.{setting}")
        conn.commit()
        plans = []
        for i in range(calls):
            del conn.notices[:]
            cur.execute(COUNT, (["client", "account", "phone"],
                                ["198.51.100.7", f"acc{i}", f"5511{i:07d}"], 1000 + i, 999 + i))
            assert len(cur.fetchall()) == 3
            conn.commit()
            plans.append(next(n for n in conn.notices if "rate_limit_counters" in n
                              and "Insert on" in n))
        return plans
    finally:
        conn.close()


def test_the_counter_upsert_runs_its_generic_plan_from_the_first_call(pg_dsn):
    plans = plans_of_calls(pg_dsn, 8)
    # Past the plan cache's five custom plans, and from the first: the parameters stay.
    for i, plan in enumerate(plans):
        assert re.search(r"\$\d", plan), (i, plan)
        assert f"'{999 + i}'::bigint" not in plan, (i, plan)  # p_previous, as a custom plan has it
    assert all("Seq Scan" not in p for p in plans), plans[-1]
