"""Each leg's xDR carries its SIP Call-ID and the process that ran it (``instance_id``), through
the record, the session's record building, the spool and its replay (old spool lines too)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from twisted.internet import defer, task
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.billing.authorize import AuthRequest
from cbserver.billing.spool import Spool
from cbserver.billing.stores import IXdrStore
from cbserver.billing.xdr import InvalidLegRecord, LegRecord, XdrWriter
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.db import xdr_store
from cbserver.errors import DatabaseUnavailable
from tests.unit.callback.fakes import FakeAuthorizer, FakeMedia, FakeRecorder, FakeUA, Request, app

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
INSTANCE = "6f1c2a3e-0d4b-4c5a-9e8f-0123456789ab"


def leg(which="A", **kw):
    return LegRecord(session_id="s1", leg=which, account_id="cb1", cli="1", cld="2", node="node7",
                     connect_time=T0, disconnect_time=T0 + dt.timedelta(seconds=5), duration=5,
                     charged_seconds=6, amount=Decimal("0.01000"), currency="EUR",
                     trigger_mode="extended", **kw)


# -- the record ------------------------------------------------------------------------------

def test_a_leg_record_keeps_its_call_id_and_instance_through_json():
    rec = leg(call_id="a84b4c76e66710@198.51.100.7", instance_id=INSTANCE.upper())
    assert rec.instance_id == INSTANCE  # normalised as PostgreSQL prints a uuid
    data = json.loads(json.dumps(rec.to_dict()))
    assert data["call_id"] == "a84b4c76e66710@198.51.100.7" and data["instance_id"] == INSTANCE
    assert LegRecord.from_dict(data) == rec


def test_a_leg_record_without_them_has_none():
    rec = leg()
    assert rec.call_id is None and rec.instance_id is None
    assert LegRecord.from_dict(rec.to_dict()) == rec


@pytest.mark.parametrize(("change", "field"), [
    ({"call_id": ""}, "call_id"),
    ({"call_id": 42}, "call_id"),
    ({"instance_id": "node1"}, "instance_id"),
])
def test_an_empty_call_id_or_a_non_uuid_instance_is_refused(change, field):
    with pytest.raises(InvalidLegRecord) as e:
        leg(**change)
    assert e.value.field == field


def test_the_store_sends_call_id_and_instance_in_their_columns():
    rec = leg(call_id="c1@host", instance_id=INSTANCE)
    row = json.loads(xdr_store._document([rec], [("9", Decimal("1.5"))]))[0]
    named = dict(zip(xdr_store.COLUMNS, row, strict=True))
    assert named["call_id"] == "c1@host" and named["instance_id"] == INSTANCE
    assert named["node"] == "node7" and named["balance_after"] == "1.5"
    cols = xdr_store.COLUMNS
    assert f"(e->>{cols.index('call_id')})::text" in xdr_store.APPLY_STATEMENT
    assert f"(e->>{cols.index('instance_id')})::uuid" in xdr_store.APPLY_STATEMENT


def test_the_apply_function_inserts_the_columns_the_store_sends_in_their_order():
    """sql/functions/75_cb_xdr_apply.sql spells the INSERT the store's COLUMNS/_TYPES build."""
    import re
    from pathlib import Path

    text = (Path(xdr_store.__file__).parents[2] / "sql" / "functions" / "75_cb_xdr_apply.sql").read_text()
    text = " ".join(re.sub(r"--[^\n]*", "", text).split())
    expected = " ".join(xdr_store._INSERT.replace("%s::jsonb", "p_rows").split())
    expected = expected.replace(" RETURNING session_id, leg", "")
    assert expected in text


# -- the session builds them -----------------------------------------------------------------

class Harness:
    """A callback on fakes, with this process's instance id in its context."""

    def __init__(self, request=None, application=None):
        self.clock = task.Clock()
        self.clock.advance(1_780_000_000)
        self.ua, self.recorder = FakeUA(), FakeRecorder()
        self.authorizer = FakeAuthorizer(self.clock, budget=Decimal("20"))
        self.request, self.app = request or Request(), application or app()
        ctx = SessionContext(ua=self.ua, media=FakeMedia(self.clock), authorizer=self.authorizer,
                             recorder=self.recorder, clock=self.clock, node="node7",
                             no_answer_timeout=30, instance_id=INSTANCE)
        first = AuthRequest(session_id="s1", account_id=self.request.account, cli=self.request.phone,
                            cld=self.request.destination or self.app.second_number)
        auth = self.authorizer.authorize(first).result
        self.session = CallbackSession("s1", self.request, self.app, auth, ctx)
        self.final = []
        self.session.start().addCallback(self.final.append)

    def records(self):
        return {r.leg: r for r in self.recorder.records}


def test_both_xdrs_of_a_connected_callback_carry_each_legs_call_id_and_the_instance():
    h = Harness()
    h.clock.advance(2)
    h.ua.calls[0].answer()
    h.clock.advance(3)
    h.ua.calls[1].answer()
    h.clock.advance(20)
    h.ua.calls[1].bye()
    recs = h.records()
    assert recs["A"].call_id == h.ua.calls[0].call_id
    assert recs["B"].call_id == h.ua.calls[1].call_id
    assert recs["A"].call_id != recs["B"].call_id
    assert {r.instance_id for r in recs.values()} == {INSTANCE}
    assert {r.node for r in recs.values()} == {"node7"}


def test_a_legb_never_placed_has_no_call_id():
    h = Harness()
    h.ua.calls[0].fail(486, "Busy Here")
    recs = h.records()
    assert len(h.ua.calls) == 1
    assert recs["A"].call_id == h.ua.calls[0].call_id and recs["A"].sip_code == 486
    assert recs["B"].call_id is None and recs["B"].sip_reason.startswith("not placed")
    assert recs["B"].instance_id == INSTANCE


def test_a_session_without_an_instance_id_records_none():
    h = Harness()
    h.session.ctx.instance_id = None
    h.ua.calls[0].fail(480, "Temporarily Unavailable")
    assert {r.instance_id for r in h.records().values()} == {None}


# -- the spool -------------------------------------------------------------------------------

@implementer(IXdrStore)
class MemoryXdrStore:
    """Keeps every leg written; ``ready`` False makes writes fail as an outage does."""

    def __init__(self):
        self.ready = True
        self.legs: list[LegRecord] = []
        self._waiters: list[defer.Deferred] = []

    def when_ready(self):
        if self.ready:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def up(self):
        self.ready = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def write_batch(self, legs):
        if not self.ready:
            return defer.fail(DatabaseUnavailable("down"))
        self.legs.extend(legs)
        return defer.succeed({x.key for x in legs})


def test_memory_store_provides_the_interface():
    assert verifyObject(IXdrStore, MemoryXdrStore())


def test_spooled_legs_replay_with_their_call_id_and_instance(tmp_path):
    store, clock = MemoryXdrStore(), task.Clock()
    store.ready = False
    writer = XdrWriter(store, clock, Spool(tmp_path / "xdr.spool"))
    writer.startService()
    legs = [leg("A", call_id="a@h", instance_id=INSTANCE), leg("B", call_id="b@h", instance_id=INSTANCE)]
    acks = [writer.record(x) for x in legs]
    clock.advance(0)
    assert all(d.called for d in acks) and writer.spool.depth == 2
    lines = [json.loads(x) for x in (tmp_path / "xdr.spool").read_text().splitlines()]
    assert [(x["call_id"], x["instance_id"]) for x in lines] == [("a@h", INSTANCE), ("b@h", INSTANCE)]
    store.up()
    assert store.legs == legs and writer.spool.depth == 0
    writer.stopService()


def test_a_spool_written_before_the_new_fields_still_replays_with_them_none(tmp_path):
    old = leg("A").to_dict()
    del old["call_id"], old["instance_id"]  # a line as the previous version spooled it
    (tmp_path / "xdr.spool").write_text(json.dumps(old, sort_keys=True) + "\n")
    store, clock = MemoryXdrStore(), task.Clock()
    writer = XdrWriter(store, clock, Spool(tmp_path / "xdr.spool"))
    writer.startService()
    assert [(x.key, x.call_id, x.instance_id) for x in store.legs] == [(("s1", "A"), None, None)]
    assert store.legs[0] == leg("A")
    assert writer.spool.depth == 0 and not (tmp_path / "xdr.spool.rejected").exists()
    writer.stopService()
