"""The two xDRs of a finished callback: built from its legs under the authorization that
applies, and stored through the session's recorder."""

from __future__ import annotations

import datetime as dt

from twisted.internet import defer

from cbserver.billing.xdr import LegRecord, leg_record
from cbserver.logs import Logger

log = Logger()


def _datetime(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def leg_records(session) -> list[LegRecord]:
    """legA's and legB's ``LegRecord`` for a ``CallbackSession`` whose legs are both down."""
    # The special charge (CALLBACK_FAIL) is for a legB that was tried and failed (busy, no
    # answer, rejected: manual, "Special charge if LegB fails"); a legB never placed (the
    # caller hung up in the IVR, no balance for it) leaves legA charged normally.
    legb_failed = session.b.call is not None and session.b.answered_at is None
    return [_record(session, leg, legb_failed) for leg in (session.a, session.b)]


def _record(session, leg, legb_failed: bool) -> LegRecord:
    """The xDR of one leg under the authorization that applies to it."""
    auth, cause = session.auth, session.cause or {}
    sip_code = leg.sip_status
    reason = leg.reason or cause.get("reason", "")
    if leg.name == "B" and leg.call is None:
        reason = f"not placed: {cause.get('code', '')}"
    # ICall.call_id: what the carrier's CDR and a SIP trace show (None: never placed).
    call_id = leg.call.call_id if leg.call is not None else None
    number = auth.request.cli if leg.name == "A" else auth.request.cld
    if leg.name == "B" and (leg.call is None or number != leg.number):
        # legB never dialled under this authorization (e.g. hosted caller never
        # identified): a zero-cost record that still says what happened.
        return LegRecord(
            session_id=session.id, leg="B", account_id=auth.account.id,
            cli=session.request.phone, cld=leg.number, node=session.ctx.node,
            disconnect_time=_datetime(leg.ended_at), currency=auth.currency,
            trigger_mode=session.request.mode, customer_id=str(auth.account.customer_id),
            access_code=session.app.access_code, sip_code=sip_code, sip_reason=reason,
            call_id=call_id, instance_id=session.ctx.instance_id)
    return leg_record(auth, leg.name, trigger_mode=session.request.mode, node=session.ctx.node,
                      disconnect_time=_datetime(leg.ended_at),
                      connect_time=_datetime(leg.answered_at), duration=leg.duration(),
                      sip_code=sip_code, sip_reason=reason, legb_failed=legb_failed,
                      call_id=call_id, instance_id=session.ctx.instance_id)


@defer.inlineCallbacks
def store_xdrs(session):
    """Build and store both legs' xDRs of ``session`` (closing the media first); fire with them."""
    now = session.clock.seconds()
    for leg in (session.a, session.b):
        if leg.ended_at is None:
            leg.ended_at = now
    records = leg_records(session)
    for leg, rec in zip((session.a, session.b), records, strict=True):
        leg.record = rec
    for leg in (session.a, session.b):
        if leg.media is not None:
            try:
                yield leg.media.close()
            except Exception:  # noqa: BLE001 - closing media must not lose the xDRs
                log.failure("closing media callback_id={callback_id}", callback_id=session.id)
    # Both legs in the same reactor turn, so the writer stores them in one transaction;
    # both are attempted even if one is refused, then the first failure is raised.
    results = yield defer.DeferredList([session.ctx.recorder.record(rec) for rec in records],
                                       consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return records
