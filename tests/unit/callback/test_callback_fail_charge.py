"""CALLBACK_FAIL charges only a legB that was tried and failed (issue 13).

The manual's "Special charge if LegB fails" is for a destination that is busy, does not
answer or rejects the call. A legB that was never placed (the caller hung up in the IVR, or
legB could not even be sent) leaves legA charged by the callback tariff, as any call.
"""

from __future__ import annotations

from decimal import Decimal

from cbserver.billing.rating import charge
from tests.unit.callback.fakes import tariff
from tests.unit.callback.test_callback_ivr import Hosted
from tests.unit.callback.test_callback_session import Harness


def _normal_a(duration: int) -> Decimal:
    """legA (55...) by the fakes' callback tariff: 30/6 at 0.12/min."""
    return charge(tariff().rates.rates[1], duration).amount


def test_an_identified_caller_hanging_up_in_the_ivr_pays_lega_by_the_callback_tariff():
    # Before: legA went by CALLBACK_FAIL (0.00 here): IVR time was free once identified.
    h = Hosted(["1818000001", "4321"], accounts={"cb-internal": "x", "cb1818000001": "4321"})
    h.ua.calls[0].answer()
    for _ in range(60):
        h.clock.advance(0.5)
        if ("enter_destination",) in h.prompts:
            break
    assert ("enter_destination",) in h.prompts
    h.ua.calls[0].bye()
    h.run(10)
    assert h.final[0]["cause"]["code"] == "lega_hung_up"
    assert len(h.ua.calls) == 1  # legB never placed
    recs = {r.leg: r for r in h.recorder.records}
    assert recs["A"].account_id == "cb1818000001"
    assert recs["A"].access_code == "WEBCALLBACK" and recs["A"].tariff_name == "Callback"
    assert recs["A"].amount == _normal_a(recs["A"].duration) > 0
    assert recs["B"].amount == 0 and recs["B"].sip_reason.startswith("not placed")


def test_a_legb_that_could_not_be_sent_leaves_lega_charged_normally():
    h = Harness()
    new_leg = h.media.new_leg

    def no_port_for_legb(application, call_id):
        if call_id.endswith("-B"):
            raise OSError("no free RTP port")
        return new_leg(application, call_id)

    h.media.new_leg = no_port_for_legb
    h.a.answer()
    h.clock.advance(1)
    assert h.final[0]["cause"]["code"] == "media_unavailable"
    recs = h.records()
    assert recs["A"].access_code != "CALLBACK_FAIL" and recs["A"].tariff_name == "Callback"
    assert recs["A"].amount == _normal_a(recs["A"].duration)


def test_a_busy_legb_still_charges_lega_by_callback_fail():
    h = Harness()
    h.a.answer()
    h.clock.advance(10)
    h.b.fail(486, "Busy Here")
    h.clock.advance(1)
    recs = h.records()
    assert recs["A"].access_code == "CALLBACK_FAIL" and recs["A"].tariff_name == "Callback fail"
    assert recs["A"].duration == 11
