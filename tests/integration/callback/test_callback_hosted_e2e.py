"""Hosted callbacks end to end: sipp answers legA and keys DTMF (RFC 4733) into the IVR."""

import pytest
import pytest_twisted

from cbserver.callback.api import CallbackRequest
from tests.support.world import World, ensure

pytestmark = pytest.mark.integration


def hosted(phone):
    return CallbackRequest(application="Web callback", mode="hosted", phone=phone,
                           client_address="127.0.0.1")


def make_world(tmp_path, dsn, digits):
    w = World(tmp_path, dsn, hold_ms=12000, digits=digits)
    pytest_twisted.blockon(ensure(w.start()))
    return w


@pytest.fixture
def ani_world(tmp_path, pg_dsn):
    w = make_world(tmp_path, pg_dsn, "18185550123")
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


@pytest.fixture
def pin_world(tmp_path, pg_dsn):
    w = make_world(tmp_path, pg_dsn, "1818000002,48151623,18185550123")
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


@pytest_twisted.ensureDeferred
async def test_hosted_caller_identified_by_ani_keys_the_destination(ani_world):
    w = ani_world
    cid = await w.server.callbacks.request_callback(hosted("559912345678"))
    connected = await w.wait_status(cid, "connected", timeout=30)
    assert connected["legs"]["B"]["number"] == "18185550123"
    status = await w.wait_end(cid, timeout=40)
    assert status["cause"]["code"] == "lega_hung_up"
    x = w.xdrs(cid)
    # Identified by ANI (s/^/cb/): both legs are the caller's, none the internal account's.
    assert x["A"]["account_id"] == x["B"]["account_id"] == "cb559912345678"
    assert x["A"]["trigger_mode"] == "hosted" and x["B"]["cld"] == "18185550123"
    assert x["B"]["duration"] >= 1 and x["B"]["amount"] > 0


@pytest_twisted.ensureDeferred
async def test_hosted_caller_keys_account_and_pin(pin_world):
    w = pin_world
    cid = await w.server.callbacks.request_callback(hosted("559900000001"))
    connected = await w.wait_status(cid, "connected", timeout=45)
    assert connected["legs"]["B"]["number"] == "18185550123"
    status = await w.wait_end(cid, timeout=40)
    x = w.xdrs(cid)
    assert status["cause"]["code"] == "lega_hung_up"
    assert x["A"]["account_id"] == x["B"]["account_id"] == "cb1818000002"


@pytest_twisted.ensureDeferred
async def test_hosted_caller_never_identified_is_charged_to_the_internal_account(tmp_path, pg_dsn):
    # The keypad phone keys nothing: three empty attempts, then the IVR hangs up.
    w = World(tmp_path, pg_dsn, hold_ms=60000, digits="")
    await w.start()
    try:
        cid = await w.server.callbacks.request_callback(hosted("559900000002"))
        status = await w.wait_end(cid, timeout=90)
        assert status["cause"]["code"] in ("ivr_no_input", "ivr_failed")
        x = w.xdrs(cid)
        assert x["A"]["account_id"] == "cb-internal" and x["A"]["duration"] > 0
        assert x["B"]["amount"] == 0
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_an_unusable_internal_account_is_the_operators_error_not_the_callers(
        tmp_path, pg_dsn):
    # The caller typed no account: a wrong or inactive internal account must not be answered
    # "unknown account or wrong password". The operator is told, at start-up and per request.
    import psycopg2
    from twisted.logger import globalLogPublisher

    from cbserver.callback.api import CallbackRefused

    events = []
    globalLogPublisher.addObserver(events.append)
    w = World(tmp_path, pg_dsn, hold_ms=5000, digits="")
    await w.start()
    try:
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("UPDATE accounts SET status = 'inactive' WHERE id = 'cb-internal'")
        conn.close()
        with pytest.raises(CallbackRefused) as info:
            await w.server.callbacks.request_callback(hosted("559900000002"))
        assert info.value.code == "not_ready" and info.value.http_status == 503
        assert "Hosted callback is not available" in info.value.message
        found = await w.server.callbacks.check_readiness()
    finally:
        await w.stop()
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_level") is not None and e["log_level"].name == "error"
              and (e.get("code") == "internal_account_unusable"
                   or "internal account" in e.get("log_format", ""))]
    assert all(e["account"] == "cb-internal" for e in errors)
    # Start-up's readiness check (this World provisions the accounts only after the server
    # started), then the refused request, then the check run again by hand.
    assert [str(e.get("refusal") or e.get("reason")).split(":")[0] for e in errors] == [
        "unknown_account", "inactive", "inactive"]
    assert not w.server.callbacks.sessions  # nothing was dialled
    assert [(f.severity, f.code) for f in found] == [("error", "internal_account_unusable")]
