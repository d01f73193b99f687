"""The xDR writer against the real PostgreSQL: one row per leg, balance change, reservation
release, idempotence on (session, leg), group commit, and legs priced from an authorization."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from zope.interface.verify import verifyObject

from cbserver.billing.authorize import AuthRequest
from cbserver.billing.spool import Spool
from cbserver.billing.xdr import ICallRecorder, LegRecord, XdrWriter, leg_record
from cbserver.db.stores import PostgresXdrStore
from tests.integration.xdr.helpers import balance, query, reservations, xdr_total

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def leg(session="s1", which="A", account="cb1001", amount="0.10000", duration=30, **kw):
    connect = T0 if duration else None
    return LegRecord(session_id=session, leg=which, account_id=account, cli="18005550100",
                     cld="442071234567", node="node1", connect_time=connect,
                     disconnect_time=T0 + dt.timedelta(seconds=duration), duration=duration,
                     charged_seconds=duration, amount=Decimal(amount), currency="USD",
                     trigger_mode="extended", sip_code=200 if duration else 486,
                     sip_reason="OK" if duration else "Busy Here", **kw)


@pytest_twisted.async_yield_fixture
async def writer(db, tmp_path):
    w = XdrWriter(PostgresXdrStore(db), reactor, Spool(tmp_path / "xdr.spool"))
    w.startService()
    yield w
    await w.stopService()


def test_writer_provides_the_recorder_interface(writer):
    assert verifyObject(ICallRecorder, writer)


@pytest_twisted.ensureDeferred
async def test_each_leg_is_a_row_and_changes_the_balance(writer, cat_dsn):
    await writer.record(leg("s1", "A", amount="0.10000"))
    await writer.record(leg("s1", "B", amount="1.23456"))
    assert balance(cat_dsn, "cb1001") == Decimal("8.66544")
    assert xdr_total(cat_dsn, "cb1001") == (2, Decimal("1.33456"))
    rows = query(cat_dsn, "SELECT leg, connect_time, balance_after, customer_id, sip_code "
                          "FROM xdrs ORDER BY leg")
    assert rows[0][1] == dt.datetime(2026, 6, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)  # ms precision
    assert [r[2] for r in rows] == [Decimal("9.90000"), Decimal("8.66544")]
    assert rows[0][3] == "1" and rows[0][4] == 200
    first, last = query(cat_dsn, "SELECT first_usage, last_usage FROM accounts WHERE id = 'cb1001'")[0]
    assert first == last == dt.datetime(2026, 6, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)


@pytest_twisted.ensureDeferred
async def test_failed_leg_is_recorded_and_costs_nothing(writer, cat_dsn):
    await writer.record(leg("s1", "B", amount="0", duration=0))
    assert xdr_total(cat_dsn, "cb1001") == (1, Decimal(0))
    assert query(cat_dsn, "SELECT sip_code, sip_reason, connect_time FROM xdrs") == [(486, "Busy Here", None)]
    assert balance(cat_dsn, "cb1001") == Decimal("10.00")


@pytest_twisted.ensureDeferred
async def test_a_reason_phrase_in_latin_1_or_with_nul_is_stored(writer, cat_dsn):
    # A carrier's 486 with a Latin-1 byte and a NUL in the reason: reason_text (what the call
    # hands the session) replaces what PostgreSQL's text cannot hold, so the leg is stored,
    # not rejected.
    from cbserver.sip.message import parse_message

    response = parse_message(
        b"SIP/2.0 486 Ocupado \xf1\x00ahora\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n")
    broken = leg("s1", "B", amount="0", duration=0)
    await writer.record(dataclasses.replace(broken, sip_code=response.status,
                                            sip_reason=response.reason_text))
    assert query(cat_dsn, "SELECT sip_code, sip_reason FROM xdrs") == [
        (486, "Ocupado \ufffd\ufffdahora")]
    assert writer.rejected == 0


@pytest_twisted.ensureDeferred
async def test_a_retried_leg_is_stored_and_charged_once(writer, cat_dsn):
    await writer.record(leg("s1", "A", amount="1.00000"))
    await writer.record(leg("s1", "A", amount="1.00000"))
    await defer.gatherResults([writer.record(leg("s2", "A", amount="2")) for _ in range(3)])
    assert xdr_total(cat_dsn, "cb1001") == (2, Decimal("3.00000"))
    assert balance(cat_dsn, "cb1001") == Decimal("7.00000")


@pytest_twisted.ensureDeferred
async def test_many_legs_at_once_go_in_few_transactions(writer, cat_dsn):
    legs = [leg(f"s{i}", "AB"[i % 2], amount="0.01000") for i in range(400)]
    calls = []
    original = writer.store.db.runInteraction

    def counting(fn, *args):
        calls.append(len(args[0]))
        return original(fn, *args)

    writer.store.db.runInteraction = counting
    try:
        await defer.gatherResults([writer.record(x) for x in legs])
    finally:
        writer.store.db.runInteraction = original
    assert sum(calls) == 400 and len(calls) <= 3  # the first alone, then the rest grouped
    assert balance(cat_dsn, "cb1001") == Decimal("6.00000")


@pytest_twisted.ensureDeferred
async def test_credit_and_subordinate_balances_grow_by_what_is_owed(writer, cat_dsn):
    await writer.record(leg("c1", "A", account="cb1002", amount="0.50000"))
    await writer.record(leg("c2", "A", account="cb1003", amount="0.75000"))
    assert balance(cat_dsn, "cb1002") == Decimal("1.50000")
    assert query(cat_dsn, "SELECT balance FROM customers WHERE id = 2") == [(Decimal("97.75000"),)]
    assert balance(cat_dsn, "cb1003") == Decimal("0")


@pytest_twisted.ensureDeferred
async def test_priced_legs_release_the_reservation_and_match_the_quote(writer, authorizer, cat_dsn):
    auth = await authorizer.authorize(AuthRequest("call-1", "cb1001", "18005550100", "442071234567"))
    assert len(reservations(cat_dsn)) == 2
    now = dt.datetime.now(dt.UTC)
    a = leg_record(auth, "A", trigger_mode="simple", node="node1", connect_time=now,
                   disconnect_time=now + dt.timedelta(seconds=95), duration=95, sip_code=200)
    b = leg_record(auth, "B", trigger_mode="simple", node="node1", connect_time=now,
                   disconnect_time=now + dt.timedelta(seconds=61), duration=61, sip_code=200)
    assert (a.prefix, a.charged_seconds, a.amount) == ("1", 96, Decimal("0.13000"))
    assert (b.prefix, b.charged_seconds, b.amount) == ("44", 61, Decimal("0.61000"))
    await writer.record(a)
    assert [r[1] for r in reservations(cat_dsn)] == ["B"]
    await writer.record(b)
    assert reservations(cat_dsn) == []
    assert balance(cat_dsn, "cb1001") == Decimal("9.26000")
    assert query(cat_dsn, "SELECT tariff_name, rate_id IS NOT NULL, peak, access_code FROM xdrs "
                          "WHERE leg = 'A'") == [("Callback", True, True, "WEBCALLBACK")]


@pytest_twisted.ensureDeferred
async def test_leg_a_by_callback_fail_when_legb_fails(writer, authorizer, cat_dsn):
    auth = await authorizer.authorize(AuthRequest("call-2", "cb1001", "18005550100", "442071234567"))
    now = dt.datetime.now(dt.UTC)
    a = leg_record(auth, "A", trigger_mode="extended", node="node1", connect_time=now,
                   disconnect_time=now + dt.timedelta(seconds=20), duration=20, sip_code=200,
                   legb_failed=True)
    b = leg_record(auth, "B", trigger_mode="extended", node="node1", disconnect_time=now,
                   sip_code=486, sip_reason="Busy Here")
    assert (a.tariff_name, a.access_code, a.amount) == ("CallbackFail", "CALLBACK_FAIL", Decimal("0.50000"))
    assert (b.amount, b.duration, b.connect_time) == (Decimal(0), 0, None)
    await defer.gatherResults([writer.record(a), writer.record(b)])
    assert balance(cat_dsn, "cb1001") == Decimal("9.50000")
    assert reservations(cat_dsn) == []


@pytest_twisted.ensureDeferred
async def test_balance_change_matches_cbserver_quote_to_the_cent(writer, authorizer, cat_dsn):
    auth = await authorizer.authorize(AuthRequest("q-1", "cb1001", "+1 800 555 0100", "44 20 7123 4567"))
    connect = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    legs = {}
    for name, seconds in (("A", 187), ("B", 151)):
        legs[name] = leg_record(auth, name, trigger_mode="extended", node="node1", connect_time=connect,
                                disconnect_time=connect + dt.timedelta(seconds=seconds), duration=seconds,
                                sip_code=200)
        await writer.record(legs[name])
    cli = str(Path(sys.executable).with_name("cbserver"))
    quoted = Decimal(0)
    for name, number, seconds in (("A", "18005550100", 187), ("B", "442071234567", 151)):
        out = await threads.deferToThread(
            subprocess.run, [cli, "quote", "--dsn", cat_dsn, "--account", "cb1001", "--number", number,
                             "--duration", str(seconds), "--at", connect.isoformat()],
            capture_output=True, text=True, check=True)
        body = json.loads(out.stdout)
        assert Decimal(body["amount"]) == legs[name].amount
        assert body["charged_seconds"] == legs[name].charged_seconds
        quoted += Decimal(body["amount"])
    assert Decimal("10.00") - balance(cat_dsn, "cb1001") == quoted
