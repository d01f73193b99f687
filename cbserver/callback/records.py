"""The two xDRs of a finished callback, built from its legs under the authorization that applies."""

from __future__ import annotations

import datetime as dt

from cbserver.billing.xdr import LegRecord, leg_record


def _datetime(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def leg_records(session) -> list[LegRecord]:
    """legA's and legB's ``LegRecord`` for a ``CallbackSession`` whose legs are both down."""
    legb_failed = session.b.answered_at is None
    return [_record(session, leg, legb_failed) for leg in (session.a, session.b)]


def _record(session, leg, legb_failed: bool) -> LegRecord:
    """The xDR of one leg under the authorization that applies to it."""
    auth, cause = session.auth, session.cause or {}
    sip_code = leg.sip_status
    reason = leg.reason or cause.get("reason", "")
    if leg.name == "B" and leg.call is None:
        reason = f"not placed: {cause.get('code', '')}"
    number = auth.request.cli if leg.name == "A" else auth.request.cld
    if leg.name == "B" and (leg.call is None or number != leg.number):
        # legB never dialled under this authorization (e.g. hosted caller never
        # identified): a zero-cost record that still says what happened.
        return LegRecord(
            session_id=session.id, leg="B", account_id=auth.account.id,
            cli=session.request.phone, cld=leg.number, node=session.ctx.node,
            disconnect_time=_datetime(leg.ended_at), currency=auth.currency,
            trigger_mode=session.request.mode, customer_id=str(auth.account.customer_id),
            access_code=session.app.access_code, sip_code=sip_code, sip_reason=reason)
    return leg_record(auth, leg.name, trigger_mode=session.request.mode, node=session.ctx.node,
                      disconnect_time=_datetime(leg.ended_at),
                      connect_time=_datetime(leg.answered_at), duration=leg.duration(),
                      sip_code=sip_code, sip_reason=reason, legb_failed=legb_failed)
