"""Issue 13 end to end: real PostgreSQL, real SIP to the sipp carrier, real RTP.

- A debit account with a small balance calls a destination that rings 20 s before answering
  (the carrier's ``420...`` numbers): the call is cut so that the balance in PostgreSQL ends
  at or above zero (before: legA's 20 s of legB ringing were never paid for).
- A hosted caller identified by ANI who keys no destination (legB never placed) pays legA by
  the callback tariff, not by ``CALLBACK_FAIL``.
"""

import dataclasses
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.accounts import Accounts
from cbserver.billing.catalog import Catalog
from cbserver.callback.api import CallbackRequest
from cbserver.db.stores import PostgresCatalogStore
from cbserver.tap import CallbackServer
from tests.support.world import DEMO_PASSWORD, World

pytestmark = pytest.mark.integration

SMALL = Decimal("0.20")


@pytest_twisted.ensureDeferred
async def test_a_small_debit_balance_stays_paid_for_when_legb_rings_20_s(tmp_path, pg_dsn):
    w = World(tmp_path, pg_dsn, hold_ms=90000)  # the phones never hang up: the cut does
    # Our no-answer timeout must outlast the carrier's 20 s of ringing.
    w.cfg = dataclasses.replace(w.cfg, sip=dataclasses.replace(w.cfg.sip, no_answer_timeout=40.0))
    w.server = CallbackServer(w.cfg, reactor)
    await w.start()
    try:
        store = PostgresCatalogStore(w.server.db)
        catalog, accounts = Catalog(store, reactor), Accounts(store, reactor)
        # 420...: 6/6 at 0.60/min. legA (55...): 30/6 at 0.12/min. 0.20 buys t = 12 s of
        # legB beside legA's first 30 s; legA's 20 s of legB ringing must come out of it.
        await catalog.create_destination({"prefix": "420", "country": "Test slow answer"})
        await catalog.create_rate("Callback", {
            "prefix": "420", "first_interval": 6, "next_interval": 6, "first_price": "0.60",
            "next_price": "0.60", "effective_from": "2020-01-01T00:00:00Z"})
        await accounts.create_account({"id": "cb4200000001", "customer": "Callback retail",
                                       "product": "Callback Services", "account_type": "debit",
                                       "balance_control": "individual",
                                       "opening_balance": str(SMALL), "password": DEMO_PASSWORD})
        w.server.authorizers["Web callback"].tariffs.invalidate()
        req = CallbackRequest(application="Web callback", mode="extended", phone="5511987654321",
                              account="cb4200000001", password=DEMO_PASSWORD,
                              destination="4205550123", client_address="127.0.0.1")
        cid = await w.server.callbacks.request_callback(req)
        await w.wait_status(cid, "connected", timeout=40)
        status = await w.wait_end(cid, timeout=60)
        x = w.xdrs(cid)
        assert status["cause"]["code"] == "max_duration"
        assert x["B"]["duration"] >= 1 and x["A"]["duration"] >= 20 + x["B"]["duration"]
        balance = w.balance("cb4200000001")
        assert balance == SMALL - x["A"]["amount"] - x["B"]["amount"]
        assert balance >= 0, (balance, x["A"]["duration"], x["B"]["duration"])
        assert x["B"]["balance_after"] >= 0 and x["A"]["balance_after"] >= 0
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_a_hosted_caller_who_keys_no_destination_pays_lega_normally(tmp_path, pg_dsn):
    # The keypad phone keys nothing; identified by ANI (s/^/cb/), it never gets a legB.
    w = World(tmp_path, pg_dsn, hold_ms=90000, digits="")
    await w.start()
    try:
        req = CallbackRequest(application="Web callback", mode="hosted", phone="559912345678",
                              client_address="127.0.0.1")
        cid = await w.server.callbacks.request_callback(req)
        status = await w.wait_end(cid, timeout=90)
        assert status["cause"]["code"] in ("ivr_no_input", "ivr_failed")
        x = w.xdrs(cid)
        assert x["A"]["account_id"] == "cb559912345678" and x["A"]["duration"] > 0
        # Before: CALLBACK_FAIL (0.06/min per second). Now the callback tariff: 55..., 30/6
        # at 0.12/min.
        assert x["A"]["access_code"] == "WEBCALLBACK" and x["A"]["tariff_name"] == "Callback"
        assert x["A"]["amount"] > 0 and x["B"]["amount"] == 0
    finally:
        await w.stop()
