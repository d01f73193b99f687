"""Issue 14 item 6, attacked live: wrong PINs spread over calls lock the account out.

The whole service tree runs in this process on loopback sockets (``tests.support.world``);
sipp is the carrier, and its ``5599...`` keypad phones key DTMF (RFC 4733) into the Hosted IVR.
Each call is a different called-back number, so only the per-account count across calls, kept
in PostgreSQL, can stop the attacker: no single call reaches ``ivr_attempts`` failures.
"""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from twisted.internet import reactor

import cbserver.devtools.democarrier as democarrier
from cbserver.callback.api import CallbackRequest
from cbserver.tap import CallbackServer
from tests.support.carrier import Carrier
from tests.support.node import query
from tests.support.world import World, ensure

pytestmark = pytest.mark.integration

ACCOUNT = "cb1818000002"  # keyed as 1818000002 (the rule s/^/cb/); its PIN is 48151623
ATTEMPTS = 3
# '#' ends each entry at once (the IVR's terminator), so no entry waits for the 4 s
# inter-digit timeout, and digits keyed during a prompt wait as type-ahead.
TWO_WRONG_PINS = "1818000002#11111111#1818000002#22222222#"
RIGHT_PIN = "1818000002#48151623#18185550123#"
HOLD_MS = 6000  # after its digits, the phone stays on the line this long, then hangs up


_plain_dtmf = democarrier.dtmf_actions


def _dtmf_actions_with_pound(digits: str) -> str:
    """``democarrier.dtmf_actions`` plus ``#`` (sipp ships dtmf_2833_pound.pcap)."""
    parts = digits.split("#")
    pound = (f'  <nop><action><exec play_pcap_audio="{democarrier.PCAP_DIR}/dtmf_2833_pound.pcap"/>'
             '</action></nop>\n  <pause milliseconds="300"/>')
    return f"\n{pound}\n".join(_plain_dtmf(p) for p in parts)


def hosted(phone: str) -> CallbackRequest:
    """A Hosted callback to the keypad phone ``phone``."""
    return CallbackRequest(application="Web callback", mode="hosted", phone=phone,
                           client_address="127.0.0.1")


def swap_carrier(world: World, folder, digits: str) -> None:
    """Replace the world's sipp by one on the same ports whose phone keys ``digits``."""
    old = world.carrier
    old.stop()
    folder.mkdir()
    world.carrier = Carrier(folder, old.port, HOLD_MS, digits, media_port=old.media_port).start()


@pytest.fixture
def world(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.setattr(democarrier, "dtmf_actions", _dtmf_actions_with_pound)
    w = World(tmp_path, pg_dsn, hold_ms=HOLD_MS, digits=TWO_WRONG_PINS)
    w.cfg = dataclasses.replace(w.cfg, limits=dataclasses.replace(w.cfg.limits, ivr_attempts=ATTEMPTS))
    w.server = CallbackServer(w.cfg, reactor)
    pytest_twisted.blockon(ensure(w.start()))
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


@pytest_twisted.ensureDeferred
async def test_wrong_pins_over_two_calls_lock_the_account_and_the_right_pin_is_refused(world, tmp_path):
    w = world
    cbs = w.server.callbacks
    # Call 1: two wrong PINs (one fewer than ivr_attempts), then the phone hangs up.
    first = await cbs.request_callback(hosted("559900000011"))
    end1 = await w.wait_end(first, timeout=40)
    failures_after_first = query(w.dsn, "SELECT failures FROM ivr_failures WHERE key = %s",
                                   (f"account:{ACCOUNT}",))
    # Call 2, another number: its first wrong PIN is the account's third failure.
    second = await cbs.request_callback(hosted("559900000022"))
    end2 = await w.wait_end(second, timeout=40)
    # Call 3, a third number, keys the account's RIGHT PIN while it is locked.
    swap_carrier(w, tmp_path / "right-pin", RIGHT_PIN)
    third = await cbs.request_callback(hosted("559900000033"))
    end3 = await w.wait_end(third, timeout=40)
    causes = [e["cause"]["code"] for e in (end1, end2, end3)]
    # Before the fix: ['lega_hung_up', 'lega_hung_up', 'lega_hung_up'], call 3 connected to
    # 18185550123 and was charged to the account.
    assert causes == ["lega_hung_up", "ivr_locked_out", "ivr_locked_out"], (causes, end3["legs"])
    assert failures_after_first == [(2,)]
    locked = query(w.dsn, "SELECT key FROM ivr_lockouts WHERE locked_until > now() ORDER BY key")
    # The account is locked; none of the numbers is (none failed ivr_attempts times).
    assert locked == [(f"account:{ACCOUNT}",)]
    assert not (end3["legs"].get("B") or {}).get("number"), end3
    # Nothing was dialled for the caller and nothing charged to the account (legB's xDR is
    # the internal account's record of a leg never placed).
    x = w.xdrs(third)
    assert (x["B"]["account_id"], x["B"]["duration"], x["B"]["amount"]) == ("cb-internal", 0, 0), x["B"]
    assert ACCOUNT not in {r["account_id"] for r in x.values()}
