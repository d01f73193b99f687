"""End to end, in one process: real PostgreSQL, real SIP over UDP to a sipp carrier, real RTP.

Each test asks the callback service for a callback, lets sipp answer (or refuse) both legs,
and checks the final status, both legs' xDRs and the balance change.
"""

from decimal import Decimal

import pytest
import pytest_twisted

from cbserver.callback.api import CallbackRefused, CallbackRequest
from cbserver.db.stores import PostgresCatalogStore
from tests.support.quote import quote
from tests.support.world import DEMO_PASSWORD, World, ensure

pytestmark = pytest.mark.integration


def extended(destination="18185550123", password=DEMO_PASSWORD, phone="5511987654321"):
    return CallbackRequest(application="Web callback", mode="extended", phone=phone,
                           account="cb1818000001", password=password, destination=destination,
                           client_address="127.0.0.1")


@pytest.fixture
def world(tmp_path, pg_dsn):
    w = World(tmp_path, pg_dsn, hold_ms=5000)
    pytest_twisted.blockon(ensure(w.start()))
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


@pytest_twisted.ensureDeferred
async def test_extended_callback_connects_and_bills_both_legs(world):
    before = world.balance("cb1818000001")
    cid = await world.server.callbacks.request_callback(extended())
    connected = await world.wait_status(cid, "connected")
    assert connected["legs"]["A"]["state"] == "answered"
    assert connected["legs"]["B"]["state"] == "answered"
    status = await world.wait_end(cid)
    # legA answered first, so the carrier's 5 s hold ends it first: the caller hung up.
    assert status["cause"]["code"] == "lega_hung_up"
    x = world.xdrs(cid)
    assert set(x) == {"A", "B"}
    assert x["A"]["cld"] == "18185550123" and x["A"]["cli"] == "5511987654321"
    assert x["A"]["prefix"] == "55" and x["B"]["prefix"] == "1818"
    assert x["A"]["duration"] >= 5 and x["B"]["duration"] >= 1
    assert x["A"]["trigger_mode"] == "extended" and x["A"]["account_id"] == "cb1818000001"
    # legA: 30 s first interval at 0.12/min; legB: 30 s first interval at 0.30/min.
    assert x["A"]["amount"] == Decimal("0.06000") and x["B"]["amount"] == Decimal("0.15000")
    assert status["charges"]["total"] == "0.21000"
    assert before - world.balance("cb1818000001") == Decimal("0.21000")


@pytest_twisted.ensureDeferred
async def test_an_offpeak_call_is_priced_by_the_offpeak_fields_through_to_the_xdr(world):
    # The manual's "Separate peak / off-peak rate": legA's rate gets off-peak prices and the
    # tariff an off-peak period covering every minute of the week, so this call, whenever the
    # test runs, is off-peak from authorization to the xDR.
    from twisted.internet import reactor

    from cbserver.billing.catalog import Catalog

    catalog = Catalog(PostgresCatalogStore(world.server.db), reactor)
    await catalog.update_tariff("Callback", {"offpeak_timezone": "America/Sao_Paulo",
                                             "offpeak_periods": ["mon-sun 00:00-23:59"]})
    [rate] = (await catalog.list_rates({"tariff": "Callback", "prefix": "55"}))["items"]
    await catalog.update_rate(rate["id"], {
        "rating_mode": "peak_offpeak", "offpeak_first_interval": 30, "offpeak_next_interval": 6,
        "offpeak_first_price": "0.06", "offpeak_next_price": "0.06"})
    world.server.authorizers["Web callback"].tariffs.invalidate()
    before = world.balance("cb1818000001")
    cid = await world.server.callbacks.request_callback(extended())
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_hung_up"
    x = world.xdrs(cid)
    assert 5 <= x["A"]["duration"] <= 30
    # legA: the off-peak 30 s first interval at 0.06/min (peak would be 0.12/min: 0.06).
    assert (x["A"]["peak"], x["A"]["amount"]) == (False, Decimal("0.03000"))
    assert x["B"]["amount"] == Decimal("0.15000")  # 1818 is flat: 30 s at 0.30/min
    assert before - world.balance("cb1818000001") == Decimal("0.18000")


@pytest_twisted.ensureDeferred
async def test_legb_busy_charges_lega_by_callback_fail(world):
    before = world.balance("cb1818000001")
    cid = await world.server.callbacks.request_callback(extended(destination="4865550123"))
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "legb_busy"
    assert status["legs"]["B"]["sip_status"] == 486
    x = world.xdrs(cid)
    assert x["A"]["access_code"] == "CALLBACK_FAIL" and x["A"]["tariff_name"] == "Callback fail"
    assert x["A"]["duration"] >= 1
    # CALLBACK_FAIL tariff: 0.06/min per second.
    expected_a = (Decimal("0.06") * x["A"]["duration"] / 60).quantize(Decimal("0.00001"))
    assert x["A"]["amount"] == expected_a
    assert x["B"]["amount"] == 0 and x["B"]["sip_code"] == 486
    assert before - world.balance("cb1818000001") == expected_a


@pytest_twisted.ensureDeferred
async def test_legb_not_answering_is_cancelled_at_our_timeout(world):
    cid = await world.server.callbacks.request_callback(extended(destination="4805550123"))
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "legb_no_answer"
    assert status["legs"]["B"]["sip_status"] == 487


@pytest_twisted.ensureDeferred
async def test_lega_busy_places_no_legb(world):
    cid = await world.server.callbacks.request_callback(extended(phone="4865551234"))
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_busy"
    x = world.xdrs(cid)
    assert x["A"]["sip_code"] == 486 and x["A"]["amount"] == 0
    assert x["B"]["amount"] == 0 and x["B"]["sip_reason"].startswith("not placed")


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_refused_before_dialling(world):
    with pytest.raises(CallbackRefused) as info:
        await world.server.callbacks.request_callback(extended(password="wrong"))
    assert info.value.code == "bad_credentials" and info.value.http_status == 401


@pytest_twisted.ensureDeferred
async def test_unrated_destination_is_refused(world):
    with pytest.raises(CallbackRefused) as info:
        await world.server.callbacks.request_callback(extended(destination="999123"))
    assert info.value.code == "forbidden"


@pytest_twisted.ensureDeferred
async def test_simple_mode_calls_the_helpdesk(world):
    req = CallbackRequest(application="Web callback", mode="simple", phone="5511987654321",
                          account="cb1818000001", client_address="127.0.0.1")
    cid = await world.server.callbacks.request_callback(req)
    status = await world.wait_end(cid)
    assert status["legs"]["B"]["number"] == "18005550100"
    assert world.xdrs(cid)["B"]["cld"] == "18005550100"


@pytest.mark.parametrize("challenge", ["401", "407"])
@pytest_twisted.ensureDeferred
async def test_trunk_digest_challenge_is_answered_and_the_balance_matches_cbserver_quote(
        world, challenge):
    before = world.balance("cb1818000001")
    number = f"{challenge}5550123"
    cid = await world.server.callbacks.request_callback(extended(destination=number))
    connected = await world.wait_status(cid, "connected")
    assert connected["legs"]["B"]["state"] == "answered"
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_hung_up"
    x = world.xdrs(cid)
    assert x["B"]["prefix"] == challenge and x["B"]["duration"] >= 1
    expected = (quote(world, "5511987654321", x["A"]["duration"], x["A"]["connect_time"])
                + quote(world, number, x["B"]["duration"], x["B"]["connect_time"]))
    assert x["A"]["amount"] + x["B"]["amount"] == expected
    assert before - world.balance("cb1818000001") == expected


@pytest_twisted.ensureDeferred
async def test_simple_mode_with_lega_busy(world):
    req = CallbackRequest(application="Web callback", mode="simple", phone="4865551234",
                          account="cb1818000001", client_address="127.0.0.1")
    cid = await world.server.callbacks.request_callback(req)
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_busy"
    assert set(world.xdrs(cid)) == {"A", "B"}


@pytest_twisted.ensureDeferred
async def test_legb_declined_is_rejected(world):
    cid = await world.server.callbacks.request_callback(extended(destination="6035550123"))
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "legb_rejected"
    assert world.xdrs(cid)["B"]["sip_code"] == 603


# sipp verifies a 401 digest in full (a wrong password is refused); a 407 answer it can
# only check by form (Proxy-Authorization with our username and a response).
@pytest.mark.parametrize("challenge,credentials", [
    ("401", {"trunk_password": "not-the-password"}),
    ("407", {"trunk_user": "someone-else"}),
])
@pytest_twisted.ensureDeferred
async def test_wrong_trunk_credentials_are_refused_by_the_carrier(tmp_path, pg_dsn, challenge,
                                                                  credentials):
    w = World(tmp_path, pg_dsn, hold_ms=5000, **credentials)
    await w.start()
    try:
        cid = await w.server.callbacks.request_callback(extended(destination=f"{challenge}5550123"))
        status = await w.wait_end(cid)
        assert status["cause"]["code"] == "legb_rejected"
        assert status["legs"]["B"]["sip_status"] == 403
    finally:
        await w.stop()
