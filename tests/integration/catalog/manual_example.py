"""The manual's example (demo/demo.toml) and a check of every stored field, read back with SQL.

The provisioning, admin API and CLI tests each create the example their own way and then
call ``check_stored`` on the same database.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.extras

from cbserver.billing.passwords import verify_password

DEMO = Path(__file__).resolve().parents[3] / "demo" / "demo.toml"
JAN1 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def demo_doc() -> dict:
    """The demo file, money as Decimal."""
    return tomllib.loads(DEMO.read_text(encoding="utf-8"), parse_float=Decimal)


def plain(value):
    """A TOML value as JSON-ready data (Decimal and datetimes as strings)."""
    if isinstance(value, dict):
        return {k: plain(val) for k, val in value.items()}
    if isinstance(value, list):
        return [plain(val) for val in value]
    if isinstance(value, Decimal | dt.datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def _rows(cur, sql, params=()):
    cur.execute(sql, params)
    return cur.fetchall()


def check_stored(dsn: str, *, generated: bool = True) -> None:
    """Assert every field of the manual's example as stored in PostgreSQL."""
    with psycopg2.connect(dsn) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        dests = {r["prefix"]: r for r in _rows(cur, "SELECT * FROM destinations")}
        assert set(dests) == {"55", "1", "1818", "|"}
        assert dests["55"]["country"] == "Brazil" and dests["1818"]["country"] == "USA/Canada"

        tariffs = {r["name"]: r for r in _rows(cur, "SELECT * FROM tariffs")}
        cb = tariffs["Callback"]
        assert (cb["currency"], cb["service"], cb["applied_to"], cb["managed_by"]) == \
            ("USD", "voice", "customer", "administrator")
        assert cb["offpeak_timezone"] == "America/Sao_Paulo"
        assert cb["offpeak_periods"] == ["mon-fri 20:00-23:59", "mon-fri 00:00-07:59", "sat-sun 00:00-23:59"]
        assert cb["split_at_boundary"] is False
        assert tariffs["Callback fail"]["currency"] == "USD"

        rates = {(r["tariff_id"], r["prefix"]): r for r in _rows(cur, "SELECT * FROM rates")}
        assert len(rates) == 4
        brazil = rates[(cb["id"], "55")]
        assert (brazil["rating_mode"], brazil["first_interval"], brazil["next_interval"],
                brazil["first_price"], brazil["next_price"]) == \
            ("peak_offpeak", 60, 6, Decimal("0.05"), Decimal("0.05"))
        assert (brazil["offpeak_first_interval"], brazil["offpeak_next_interval"],
                brazil["offpeak_first_price"], brazil["offpeak_next_price"]) == \
            (60, 6, Decimal("0.03"), Decimal("0.03"))
        assert brazil["effective_from"] == JAN1 and brazil["formula"] is None
        usa = rates[(cb["id"], "1")]
        assert (usa["rating_mode"], usa["first_interval"], usa["next_interval"], usa["first_price"],
                usa["next_price"], usa["offpeak_first_price"]) == \
            ("flat", 30, 6, Decimal("0.02"), Decimal("0.02"), None)
        assert rates[(cb["id"], "1818")]["formula"] == "amount + 0.05"
        fail = rates[(tariffs["Callback fail"]["id"], "|")]
        assert (fail["first_price"], fail["next_price"], fail["first_interval"]) == (0, 0, 1)

        (product,) = _rows(cur, "SELECT * FROM products")
        assert (product["name"], product["end_user_name"], product["product_type"], product["currency"],
                product["managed_by"], product["default_acl"], product["account_role"]) == \
            ("Callback Services", "Web callback", "main", "USD", "administrator", "Account self-care",
             "universal")
        assert _rows(cur, "SELECT service FROM product_services") == [{"service": "voice"}]
        entries = _rows(cur, "SELECT e.service, e.node, e.access_code, t.name AS tariff, "
                             "e.overdraft_protection FROM rating_entries e JOIN tariffs t ON "
                             "t.id = e.tariff_id ORDER BY e.access_code")
        assert [tuple(e.values()) for e in entries] == [
            ("voice", "node1", "CALLBACK_FAIL", "Callback fail", False),
            ("voice", "node1", "WEBCALLBACK", "Callback", False)]

        (customer,) = _rows(cur, "SELECT * FROM customers")
        assert (customer["name"], customer["balance_control"], customer["currency"],
                customer["credit_limit"], customer["business_model"], customer["customer_class"],
                customer["billing_period"], customer["billing_period_timezone"]) == \
            ("Retail Callback", "postpaid", "USD", Decimal("1000"), "universal", "Default", "monthly",
             "America/Sao_Paulo")

        accounts = {r["id"]: r for r in _rows(cur, "SELECT * FROM accounts")}
        demo1 = accounts["cb1818000001"]
        assert (demo1["account_type"], demo1["balance_control"], demo1["balance"], demo1["opening_balance"],
                demo1["status"], demo1["web_login"], demo1["time_zone"], demo1["language"],
                demo1["customer_id"], demo1["product_id"], demo1["credit_limit"], demo1["internal"]) == \
            ("debit", "individual", Decimal("20"), Decimal("20"), "active", "cb1818000001",
             "America/Sao_Paulo", "en", customer["id"], product["id"], None, False)
        assert verify_password("demo-pass-1", demo1["password_hash"])
        assert verify_password("demo-web-1", demo1["web_password_hash"])
        assert verify_password("demo-pass-2", accounts["cb1818000002"]["password_hash"])
        assert accounts["cb1818000002"]["language"] == "pt-BR"
        internal = accounts["cb-internal"]
        assert (internal["internal"], internal["account_type"], internal["balance_control"],
                internal["balance"], internal["status"]) == (True, "credit", "subordinate", 0, "active")
        assert verify_password("Demo#Internal-2026!xQ", internal["password_hash"])

        if generated:
            (batch,) = _rows(cur, "SELECT * FROM batches")
            assert batch["name"] == "demo-cards" and batch["customer_id"] == customer["id"]
            cards = [a for a in accounts.values() if a["batch_id"] == batch["id"]]
            assert len(cards) == 10
            for card in cards:
                assert card["id"].startswith("cb1818") and len(card["id"]) == 11 and card["id"][2:].isdigit()
                assert (card["status"], card["balance"], card["opening_balance"], card["web_login"],
                        card["time_zone"], card["language"], card["account_type"]) == \
                    ("inactive", Decimal("5"), Decimal("5"), card["id"], "America/Sao_Paulo", "en", "debit")
                assert card["password_hash"] and card["web_password_hash"]
            (run,) = _rows(cur, "SELECT * FROM generator_runs")
            assert run["quantity"] == 10 and run["parameters"]["prefix"] == "cb1818"
            assert "password" not in json.dumps(run["parameters"]).replace("service_password", "")
