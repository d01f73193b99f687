"""The hosted IVR: ANI identification, PIN entry with lockout, destination entry."""

from decimal import Decimal

from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.billing.authorize import AuthRequest
from cbserver.callback.ivr import HostedIvr
from cbserver.callback.session import CallbackSession, SessionContext
from tests.unit.callback.fakes import FakeAuthorizer, FakeMedia, FakeRecorder, FakeUA, Request, app


class FakeDirectory:
    def __init__(self, authorizer):
        self.authorizer = authorizer

    def has_password(self, account_id):
        known = account_id in self.authorizer.accounts
        return defer.succeed(not known or self.authorizer.accounts[account_id] is not None)


class FakeLockouts:
    def __init__(self):
        self.locks = {}

    def locked(self, keys):
        return defer.succeed(any(k in self.locks for k in keys))

    def lock(self, keys, seconds):
        for k in keys:
            self.locks[k] = seconds
        return defer.succeed(None)

    def failed(self, keys, limit, seconds):
        self.failures = getattr(self, "failures", {})
        hit = []
        for k in keys:
            self.failures[k] = self.failures.get(k, 0) + 1
            if self.failures[k] >= limit:
                self.locks[k] = seconds
                del self.failures[k]
                hit.append(k)
        return defer.succeed(hit)


class Hosted:
    def __init__(self, scripts, accounts=None, phone="5511987654321"):
        self.clock = Clock()
        self.clock.advance(1_780_000_000)
        self.ua = FakeUA()
        self.media = FakeMedia(self.clock, scripts={"A": scripts})
        self.authorizer = FakeAuthorizer(self.clock, accounts=accounts)
        self.recorder = FakeRecorder()
        self.lockouts = FakeLockouts()
        directory = FakeDirectory(self.authorizer)
        ctx = SessionContext(
            ua=self.ua, media=self.media, authorizer=self.authorizer, recorder=self.recorder,
            clock=self.clock, node="node1", no_answer_timeout=30,
            ivr_factory=lambda s: HostedIvr(s, directory, self.lockouts, 3, 900))
        req = Request(mode="hosted", account=None, destination=None, phone=phone)
        first = AuthRequest(session_id="h1", account_id="cb-internal", cli=phone, cld=phone)
        auth = self.authorizer.authorize(first).result
        self.session = CallbackSession("h1", req, app(), auth, ctx)
        self.final = []
        self.session.start().addCallback(self.final.append)

    @property
    def prompts(self):
        return self.media.legs[0].played

    def run(self, seconds=60):
        for _ in range(int(seconds)):
            self.clock.advance(1)


def test_identified_by_ani_hears_balance_and_minutes_and_legb_is_dialled():
    h = Hosted(["18185550123"], accounts={"cb-internal": "x", "cb5511987654321": None})
    h.ua.calls[0].answer()
    h.run(10)
    assert h.prompts[0] == ("welcome",)
    assert h.prompts[1] == ("your_balance_is", "20", "dollars")
    assert h.prompts[2] == ("enter_destination",)
    assert h.prompts[3][0] == "you_have" and h.prompts[3][-1] == "minutes"
    assert len(h.ua.calls) == 2 and h.ua.calls[1].number == "18185550123"
    assert h.session.account_id == "cb5511987654321"
    h.ua.calls[1].answer()
    h.clock.advance(30)
    h.ua.calls[0].bye()
    recs = {r.leg: r for r in h.recorder.records}
    # Once identified, both legs go to the caller's account, not the internal one.
    assert recs["A"].account_id == recs["B"].account_id == "cb5511987654321"
    assert recs["B"].duration == 30 and recs["B"].amount == Decimal("0.60000")


def test_pin_entry_when_ani_is_unknown_maps_digits_through_the_rule():
    h = Hosted(["1818000001", "4321", "18185550123"],
               accounts={"cb-internal": "x", "cb1818000001": "4321"})
    h.ua.calls[0].answer()
    h.run(20)
    assert ("enter_account_number",) in h.prompts and ("enter_pin",) in h.prompts
    assert h.session.account_id == "cb1818000001"
    assert h.ua.calls[1].number == "18185550123"
    pin_checks = [r for r in h.authorizer.requests if r.check_password]
    assert pin_checks and pin_checks[0].password == "4321"


def test_three_bad_pins_end_the_call_and_lock_out_number_and_account():
    h = Hosted(["1818000001", "0000", "1818000001", "1111", "1818000001", "2222"],
               accounts={"cb-internal": "x", "cb1818000001": "4321"})
    h.ua.calls[0].answer()
    h.run(40)
    assert h.final and h.final[0]["cause"]["code"] == "ivr_failed"
    assert set(h.lockouts.locks) == {"phone:5511987654321", "account:cb1818000001"}
    assert len(h.ua.calls) == 1
    recs = {r.leg: r for r in h.recorder.records}
    # Never identified: legA stays on the internal account.
    assert recs["A"].account_id == "cb-internal" and recs["A"].duration > 0
    assert recs["B"].amount == 0


def test_locked_out_number_hears_goodbye_only():
    h = Hosted([], accounts={"cb-internal": "x"})
    h.lockouts.locks["phone:5511987654321"] = 900
    h.ua.calls[0].answer()
    h.run(5)
    assert h.prompts == [("goodbye",)]
    assert h.final[0]["cause"]["code"] == "ivr_locked_out"


def test_star_restarts_the_destination():
    h = Hosted(["4477*18185550123"], accounts={"cb-internal": "x", "cb5511987654321": None})
    h.ua.calls[0].answer()
    h.run(10)
    assert h.ua.calls[1].number == "18185550123"


def test_unrated_destination_is_asked_again():
    h = Hosted(["999", "18185550123"], accounts={"cb-internal": "x", "cb5511987654321": None})
    h.ua.calls[0].answer()
    h.run(15)
    assert ("invalid", "try_again") in h.prompts
    assert h.ua.calls[1].number == "18185550123"


def test_caller_hangs_up_during_ivr():
    h = Hosted(["1818000001"], accounts={"cb-internal": "x", "cb1818000001": "4321"})
    h.ua.calls[0].answer()
    h.clock.advance(1.5)
    h.ua.calls[0].bye()
    h.run(10)
    assert h.final[0]["cause"]["code"] == "lega_hung_up"
    assert len(h.ua.calls) == 1
    assert not [c for c in h.clock.getDelayedCalls() if c.active()]


def test_caller_identified_by_ani_who_keys_no_destination_pays_for_lega():
    # Identified, then silence at "enter the number": no legB. The internal account is only
    # for calls where nobody was identified, so legA is the caller's.
    h = Hosted([], accounts={"cb-internal": "x", "cb5511987654321": None})
    h.ua.calls[0].answer()
    h.run(120)
    assert h.final and h.final[0]["cause"]["code"] == "ivr_no_input"
    assert len(h.ua.calls) == 1
    recs = {r.leg: r for r in h.recorder.records}
    assert recs["A"].account_id == "cb5511987654321" and recs["A"].duration > 0
    # No legB was ever placed: the special charge (CALLBACK_FAIL) is for a legB tried and
    # failed, so legA is rated normally (issue 13: IVR time is not free to identified callers).
    assert recs["A"].access_code == "WEBCALLBACK" and recs["B"].amount == 0
    assert recs["A"].tariff_name == "Callback" and recs["A"].amount > 0


def test_caller_identified_by_pin_who_hangs_up_at_the_balance_pays_for_lega():
    h = Hosted(["1818000001", "4321"], accounts={"cb-internal": "x", "cb1818000001": "4321"})
    h.ua.calls[0].answer()
    for _ in range(60):
        h.clock.advance(0.5)
        if ("enter_destination",) in h.prompts:
            break
    assert ("enter_destination",) in h.prompts  # identified: the balance was told
    h.ua.calls[0].bye()
    h.run(10)
    assert h.final[0]["cause"]["code"] == "lega_hung_up"
    recs = {r.leg: r for r in h.recorder.records}
    assert recs["A"].account_id == "cb1818000001" and recs["A"].duration > 0


def test_failures_count_per_account_across_calls():
    # Issue 14, item 6. Call 1 tries the victim's account twice, then another account; call 2,
    # from another number, tries the victim's account again. Before: only the last account
    # tried in call 1 was locked, so the victim's account met 4 wrong PINs and stayed open.
    accounts = {"cb-internal": "x", "cb1818000001": "4321", "cb1818000002": "9999"}
    one = Hosted(["1818000001", "0000", "1818000001", "1111", "1818000002", "2222"], accounts)
    one.ua.calls[0].answer()
    one.run(40)
    assert one.final[0]["cause"]["code"] == "ivr_failed"
    two = Hosted(["1818000001", "3333", "1818000001", "4321"], accounts, phone="5511900000002")
    two.lockouts = one.lockouts  # the same PostgreSQL table, as on every node
    two.ua.calls[0].answer()
    two.run(40)
    assert two.final and two.final[0]["cause"]["code"] == "ivr_locked_out"
    assert "account:cb1818000001" in two.lockouts.locks
    # The right PIN, keyed after the lockout, was never tried.
    assert [r.password for r in two.authorizer.requests if r.check_password] == ["3333"]
    assert len(two.ua.calls) == 1
