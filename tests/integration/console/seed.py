"""Seed data for the console tests: xDRs, callbacks (past and live), nodes, in plain SQL.

``seed(dsn)`` writes ``PAST`` ended callbacks (two xDRs each, over three days, three accounts,
two customers, two nodes, four causes, three destinations), two live callbacks (one on a
live process with an answered leg's crash-recovery row, one on a dead process) and their
server_nodes rows. It returns the expected rows in Python, so that each test checks the API
against data it did not read from the API.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg2

from cbserver.billing.model import Rate, TariffRates
from cbserver.billing.rating import price_leg
from cbserver.callback.recovery import pricer_to_dict

PAST = 40
BASE = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)
ACCOUNTS = ("acc1", "acc2", "acc3")
CAUSES = ("legb_hung_up", "lega_busy", "legb_busy", "operator_hangup")
DESTINATIONS = ("18185550123", "5511987654321", "442071234567")
NODES = ("node1", "node2")
LIVE_INSTANCE = "11111111-1111-1111-1111-111111111111"
DEAD_INSTANCE = "22222222-2222-2222-2222-222222222222"


def _state(sid: str, cause: str | None, status: str, pdd: float) -> str:
    legs = {"A": {"state": "ended", "number": "5511999", "post_dial_delay": pdd / 2},
            "B": {"state": "ended", "number": "1818", "post_dial_delay": pdd}}
    return json.dumps({"id": sid, "status": status, "legs": legs,
                       "cause": {"code": cause, "sip_status": None, "reason": "r"} if cause else None})


def seed(dsn: str) -> list[dict]:
    """Write the data; return the xDRs as dicts (API shape), newest first."""
    xdrs = []
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO server_nodes (node, instance_id, hostname, pid, version) "
                    "VALUES ('node1', %s, 'h1', 1, 't')", (LIVE_INSTANCE,))
        cur.execute("INSERT INTO server_nodes (node, instance_id, hostname, pid, version, last_seen) "
                    "VALUES ('node2', %s, 'h2', 2, 't', now() - interval '1 hour')", (DEAD_INSTANCE,))
        for i in range(PAST):
            sid = f"past{i:03d}"
            cause, node = CAUSES[i % 4], NODES[i % 2]
            created = BASE + dt.timedelta(hours=i * 2)
            cur.execute("INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                        "destination, status, state, node, instance_id, created_at, updated_at) "
                        "VALUES (%s, 'Web callback', 'extended', %s, '5511999', %s, 'ended', "
                        "%s, %s, %s, %s, %s)",
                        (sid, ACCOUNTS[i % 3], DESTINATIONS[i % 3], _state(sid, cause, "ended", 1.0 + i % 3),
                         node, LIVE_INSTANCE if node == "node1" else DEAD_INSTANCE, created, created))
            for leg, offset in (("A", 70), ("B", 60)):
                answered = cause not in ("lega_busy",) and (leg == "A" or cause != "legb_busy")
                duration = 30 + i if answered else 0
                amount = Decimal(duration) * Decimal("0.01") if answered else Decimal(0)
                end = created + dt.timedelta(seconds=offset + i)
                row = {"session_id": sid, "leg": leg, "account_id": ACCOUNTS[i % 3],
                       "customer_id": f"cust{i % 2}", "cli": "5511999", "cld": DESTINATIONS[i % 3],
                       "access_code": "WEBCALLBACK", "node": node, "tariff_name": "Callback",
                       "prefix": DESTINATIONS[i % 3][:2], "peak": True,
                       "connect_time": (end - dt.timedelta(seconds=duration)) if answered else None,
                       "disconnect_time": end, "duration": duration, "charged_seconds": duration,
                       "amount": amount, "currency": "USD", "sip_code": 200 if answered else 486,
                       "sip_reason": ("remote\r\nhangup" if i % 5 == 0 else "remote hangup")
                       if answered else "Busy, \"here\"",
                       "trigger_mode": "extended", "call_id": f"{sid}-{leg}@trunk"}
                cols = list(row)
                cur.execute(f"INSERT INTO xdrs ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
                            "RETURNING id", [row[c] for c in cols])
                row["id"] = cur.fetchone()[0]
                row["cause"] = cause
                xdrs.append(row)
        # Live: one on the live process with legA answered 20 s ago (priced 0.10/min, 1 s steps),
        # one on the dead process with nothing answered.
        for sid, instance, node in (("live001", LIVE_INSTANCE, "node1"), ("live002", DEAD_INSTANCE, "node2")):
            cur.execute("INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                        "destination, status, state, node, instance_id) VALUES "
                        "(%s, 'Web callback', 'extended', 'acc1', '5511999', '18185550123', "
                        "'answered', %s, %s, %s)", (sid, _state(sid, None, "answered", 1.5), node, instance))
        cur.execute("SELECT extract(epoch FROM now())::float8")
        now = cur.fetchone()[0]
        rate = Rate(prefix="55", first_interval=1, next_interval=1, first_price=Decimal("0.10"),
                    next_price=Decimal("0.10"), effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        pricer = price_leg(TariffRates("USD", (rate,)), "5511999", dt.datetime.now(dt.UTC))
        data = {"currency": "USD", "legs": [{"leg": "A", "answered_at": now - 20.0,
                                             "pricer": pricer_to_dict(pricer)}]}
        cur.execute("INSERT INTO callback_recovery (session_id, node, instance_id, data) "
                    "VALUES ('live001', 'node1', %s, %s)", (LIVE_INSTANCE, json.dumps(data)))
    conn.close()
    xdrs.sort(key=lambda r: (r["disconnect_time"], r["id"]), reverse=True)
    return xdrs


def api_value(value):
    """A seeded Python value as the API's JSON shows it."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, Decimal):
        return format(value.quantize(Decimal("0.00001")), "f")
    return value
