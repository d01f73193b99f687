"""Every mode against every trunk outcome, through the JSON API over real HTTP, sipp as the trunk.

The matrix: extended, simple and hosted x legA and legB answered; legA busy; legA not
answered; legB busy; legB not answered; legA 407-challenged; legB 407-challenged. Each case
starts its own whole server (``World``) and sipp carrier, posts the callback with ``treq``,
polls ``GET /api/v1/callbacks/{id}`` until it ends, then checks the final cause, both legs'
SIP status, both legs' xDRs, the balance change, and each connected leg's charge to the cent
against ``cbserver quote`` run as a separate process.

The carrier decides by the number it is asked to call (``scripts/sipp/carrier.xml``), so each
outcome is a choice of numbers: the person's phone for legA; for legB the destination typed
(extended), the instance's ``second_number`` (simple), or the digits the 5599... keypad phone
keys as RFC 4733 DTMF into the IVR (hosted).

What the code is specified to charge (README "What happens during a callback", docs/billing.md
"Which tariff rates a call"): a leg that never connected costs nothing; when legB was never
established the instance (``special_charge_if_legb_fails = true``) charges legA by the
product's CALLBACK_FAIL entry (tariff "Callback fail"); hosted legA is charged to the internal
account (a subordinate account: its customer's balance owes it) until the IVR identifies the
caller, and to the caller's account from then on, legA's time so far included.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.callback.causes import describe
from cbserver.config import parse_config
from cbserver.tap import CallbackServer
from tests.support.api import poll_status, post_callback
from tests.support.quote import quote
from tests.support.world import DEMO_PASSWORD, World, config_text, ensure

pytestmark = pytest.mark.integration

ACCOUNT = "cb1818000001"
HOSTED_ACCOUNT = "cb559912345678"  # the keypad phone 559912345678 through s/^/cb/
INTERNAL = "cb-internal"
CUSTOMER = "Callback retail"  # owns every demo account; cb-internal spends from its balance

PHONE = "5511987654321"  # legA that answers (any number the carrier has no rule for)
KEYPAD = "559912345678"  # legA that answers and keys DTMF (hosted)
KEYPAD_407 = "407559912345"  # the same phone behind a 407 challenge (account cb407559912345)
DESTINATION = "18185550123"  # legB that answers
HELPDESK = "18005550100"  # the stock config's second_number
# The rated prefix legB's xDR must show (the longest match in the demo tariff).
B_PREFIX = {DESTINATION: "1818", HELPDESK: "1"}
# The carrier's rules, by prefix (legA numbers end 1234, legB numbers 0123).
BUSY, NO_ANSWER, CHALLENGE = "486", "480", "407"

# The stock config rings for 3 s before cancelling; 2 s still leaves the carrier's 1 s of
# ringing before an answer a whole second of margin and keeps the no-answer cases short.
NO_ANSWER_TIMEOUT = 2.0
# How long the carrier holds an answered call before it hangs up. Extended/simple reach legB
# about a second after legA answers, so 3 s lets both legs connect (legA, answered first,
# ends first: cause lega_hung_up). legB not answering must ring out (2 s) before legA hangs
# up, or the cause would be "caller hung up while legB rang". Hosted first runs the IVR
# (welcome, balance, the destination keyed digit by digit and its inter-digit timeout: legB is
# placed about 11 s after legA answers here), so legA must stay up past it and past legB
# ringing out (HOSTED_HOLD_MS).
HOLD_MS = 3000
LEGB_RINGS_OUT_HOLD_MS = 5500
HOSTED_HOLD_MS = 16000


class OutcomeWorld(World):
    """A ``World`` whose configuration text is rewritten before the server is built.

    ``World.__init__`` builds the server from ``config_text``; this builds it again, unstarted,
    from the same text (same ports) with the simple-mode ``second_number`` and the no-answer
    timeout replaced, so simple mode's legB can be a number the carrier refuses.
    """

    def __init__(self, tmp_path, dsn, *, hold_ms: int, digits: str, second_number: str):
        super().__init__(tmp_path, dsn, hold_ms=hold_ms, digits=digits)
        sip_port = int(self.cfg.sip.listen.rsplit(":", 1)[1])
        rtp_base = int(self.cfg.rtp.ports.split("-")[0])
        text = config_text(dsn, tmp_path / "state", sip_port, self.carrier.port, self.web_port,
                           rtp_base)
        text = replace_once(text, f'second_number = "{HELPDESK}"',
                            f'second_number = "{second_number}"')
        text = replace_once(text, "no_answer_timeout = 3.0",
                            f"no_answer_timeout = {NO_ANSWER_TIMEOUT}")
        self.cfg = parse_config(text)
        self.server = CallbackServer(self.cfg, reactor)


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; fails loudly if world.py's config no longer has it."""
    assert text.count(old) == 1, f"config text has {text.count(old)} of {old!r}"
    return text.replace(old, new)


# Every wait is bounded, so a stuck server fails its case instead of the run's 600 s timeout:
# each HTTP request, the world's start (PostgreSQL, provisioning, SIP) and stop, the wait
# for the end.
START_TIMEOUT = 60.0


def start_bounded(world: World) -> None:
    """Start ``world`` (from a fixture), failing after START_TIMEOUT instead of hanging."""
    pytest_twisted.blockon(ensure(world.start()).addTimeout(START_TIMEOUT, reactor))


def stop_bounded(world: World) -> None:
    """Stop ``world`` (from a fixture); the carrier is stopped even if the server hangs."""
    pytest_twisted.blockon(ensure(world.stop()).addTimeout(START_TIMEOUT, reactor))


def customer_balance(world: World) -> Decimal:
    """The demo customer's balance (what its subordinate accounts, cb-internal, owe)."""
    with psycopg2.connect(world.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT balance FROM customers WHERE name = %s", (CUSTOMER,))
        return cur.fetchone()[0]


@dataclass(frozen=True)
class Outcome:
    """What the carrier does with each leg, and what cbserver must make of it.

    ``a_sip``/``b_sip`` are the legs' final SIP status (None: never placed); ``a_fail_tariff``:
    legA is charged by the CALLBACK_FAIL tariff because legB was never established.
    """

    lega: str  # the carrier's rule for legA: "" (answers), BUSY, NO_ANSWER or CHALLENGE
    legb: str  # the same for legB
    cause: str
    a_sip: int
    b_sip: int | None
    a_fail_tariff: bool

    @property
    def b_placed(self) -> bool:
        """legB was dialled at all."""
        return self.b_sip is not None


OUTCOMES = {
    "answered": Outcome("", "", "lega_hung_up", 200, 200, False),
    "lega_busy": Outcome(BUSY, "", "lega_busy", 486, None, False),
    # Our own timeout CANCELs the INVITE; the carrier answers the CANCEL and the INVITE 487.
    "lega_no_answer": Outcome(NO_ANSWER, "", "lega_no_answer", 487, None, False),
    "legb_busy": Outcome("", BUSY, "legb_busy", 200, 486, True),
    "legb_no_answer": Outcome("", NO_ANSWER, "legb_no_answer", 200, 487, True),
    "lega_407": Outcome(CHALLENGE, "", "lega_hung_up", 200, 200, False),
    "legb_407": Outcome("", CHALLENGE, "lega_hung_up", 200, 200, False),
}



@dataclass(frozen=True)
class Case:
    """One cell of the matrix: the request, the world it needs and what must come of it."""

    mode: str
    name: str
    outcome: Outcome

    @property
    def phone(self) -> str:
        """The person's number (legA)."""
        if self.mode == "hosted" and self.outcome.lega == CHALLENGE:
            return KEYPAD_407  # challenged, then the keypad phone: the IVR can go all the way
        if self.outcome.lega:
            return f"{self.outcome.lega}5551234"
        return KEYPAD if self.mode == "hosted" else PHONE

    @property
    def destination(self) -> str:
        """legB's number, however the mode gets it."""
        if self.outcome.legb:
            return f"{self.outcome.legb}5550123"
        return HELPDESK if self.mode == "simple" else DESTINATION

    @property
    def hold_ms(self) -> int:
        """How long the carrier keeps an answered call; see the constants."""
        if self.mode == "hosted" and self.identified:
            return HOSTED_HOLD_MS
        return LEGB_RINGS_OUT_HOLD_MS if self.outcome.legb == NO_ANSWER else HOLD_MS

    @property
    def identified(self) -> bool:
        """Hosted: the IVR identified the caller by ANI (legA answered and is the keypad)."""
        return self.mode == "hosted" and self.phone in (KEYPAD, KEYPAD_407)

    @property
    def account(self) -> str:
        """The account both legs' xDRs are charged to."""
        if self.mode != "hosted":
            return ACCOUNT
        return f"cb{self.phone}" if self.identified else INTERNAL  # s/^/cb/

    def body(self) -> dict:
        """The POST /api/v1/callbacks body."""
        if self.mode == "extended":
            return {"mode": "extended", "account": ACCOUNT, "password": DEMO_PASSWORD,
                    "phone": self.phone, "destination": self.destination}
        if self.mode == "simple":
            return {"mode": "simple", "account": ACCOUNT, "phone": self.phone}
        return {"mode": "hosted", "phone": self.phone}


CASES = [Case(mode, name, outcome)
         for mode in ("extended", "simple", "hosted") for name, outcome in OUTCOMES.items()]


@pytest.fixture
def case_world(request, tmp_path, pg_dsn):
    """The world one case needs: its hold time, its keyed digits, its simple-mode legB."""
    case: Case = request.param
    w = OutcomeWorld(tmp_path, pg_dsn, hold_ms=case.hold_ms, digits=case.destination,
                     second_number=case.destination if case.mode == "simple" else HELPDESK)
    start_bounded(w)
    yield case, w
    stop_bounded(w)


def leg_charge(world: World, xdr: dict, tariff: str) -> Decimal:
    """What `cbserver quote` charges for this xDR's leg (its number, duration, connect time)."""
    number = xdr["cli"] if xdr["leg"] == "A" else xdr["cld"]
    return quote(world, number, xdr["duration"], xdr["connect_time"], tariff=tariff)


@pytest.mark.parametrize("case_world", CASES, ids=[f"{c.mode}-{c.name}" for c in CASES],
                         indirect=True)
@pytest_twisted.ensureDeferred
async def test_outcome_over_the_api_bills_both_legs_as_cbserver_quote(case_world):
    case, world = case_world
    out = case.outcome
    before = {acc: world.balance(acc)
              for acc in (ACCOUNT, HOSTED_ACCOUNT, f"cb{KEYPAD_407}", INTERNAL)}
    owed_before = customer_balance(world)

    code, body, _ = await post_callback(world, case.body())
    assert code == 202, body
    cb_id = body["id"]
    # Hosted reaches legB only after the IVR: allow for HOSTED_HOLD_MS and the prompts after.
    final, seen = await poll_status(world, cb_id, "ended",
                                         timeout=45.0 if case.mode == "hosted" else 30.0)

    # The status: why it ended, each leg's final SIP status.
    assert final["mode"] == case.mode
    assert final["cause"]["code"] == out.cause, final
    assert final["cause"]["description"] == describe(out.cause)
    assert final["legs"]["A"]["sip_status"] == out.a_sip, final["legs"]
    assert final["legs"]["B"]["sip_status"] == out.b_sip, final["legs"]
    if out.b_placed and out.b_sip == 200:
        assert "connected" in seen, seen
    if out.b_placed:
        assert final["legs"]["B"]["number"] == case.destination

    # Both legs' xDRs, on the account the mode charges.
    x = world.xdrs(cb_id)
    assert set(x) == {"A", "B"}
    a, b = x["A"], x["B"]
    assert a["account_id"] == b["account_id"] == case.account
    assert a["trigger_mode"] == b["trigger_mode"] == case.mode
    assert a["cli"] == case.phone
    assert a["sip_code"] == out.a_sip
    assert b["sip_code"] == out.b_sip
    if out.b_placed:
        assert b["cld"] == case.destination
    else:
        assert b["amount"] == 0 and b["duration"] == 0
        assert b["sip_reason"] == f"not placed: {out.cause}"
    if out.a_sip != 200:  # legA never connected: nothing is charged at all
        assert a["amount"] == 0 and a["duration"] == 0
    else:
        assert a["duration"] >= 1 and a["amount"] > 0
    if out.b_sip != 200:
        assert b["amount"] == 0 and b["duration"] == 0
    else:
        assert b["duration"] >= 1 and b["amount"] > 0
        assert b["prefix"] == B_PREFIX.get(case.destination, out.legb)
    a_tariff = "Callback fail" if out.a_fail_tariff else "Callback"
    if a["duration"]:
        assert a["tariff_name"] == a_tariff
        # "Callback fail" has one rate for any number ("|"); the normal tariff rates legA by
        # the number called back.
        assert a["prefix"] == ("|" if out.a_fail_tariff else out.lega or case.phone[:2])
        assert a["access_code"] == ("CALLBACK_FAIL" if out.a_fail_tariff else "WEBCALLBACK")

    # Each connected leg costs what the operator's tool says, to the cent (5 places).
    assert a["amount"] == leg_charge(world, a, a_tariff)
    assert b["amount"] == leg_charge(world, b, "Callback")
    total = a["amount"] + b["amount"]
    assert final["charges"] == {"A": format(a["amount"], "f"), "B": format(b["amount"], "f"),
                                "total": format(total, "f"), "currency": "USD"}

    # The balances moved by exactly the xDRs: a debit account pays, the internal account's
    # customer owes; no other account is touched.
    after = {acc: world.balance(acc) for acc in before}
    owed = customer_balance(world) - owed_before
    for acc in before:
        if acc == case.account and acc != INTERNAL:
            assert before[acc] - after[acc] == total, acc
        else:
            assert after[acc] == before[acc], acc
    assert owed == (total if case.account == INTERNAL else 0)
