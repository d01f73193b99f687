"""``LegRecord.to_dict`` (the spool line, the crash-recovery template): a shallow copy of the
fields gives exactly what the former ``dataclasses.asdict`` conversion gave, and round-trips."""

import datetime as dt
import json
from dataclasses import asdict, fields
from decimal import Decimal

from cbserver.billing.xdr import LegRecord

T0 = dt.datetime(2026, 12, 7, 11, 0, 0, 123456, tzinfo=dt.UTC)


def _full() -> LegRecord:
    """A record with every field set to a value other than its default."""
    return LegRecord(session_id="s1", leg="B", account_id="cb1", cli="15551234", cld="4930123",
                     node="node7", disconnect_time=T0 + dt.timedelta(seconds=65), currency="EUR",
                     trigger_mode="extended", duration=65, charged_seconds=66,
                     amount=Decimal("0.12345"), connect_time=T0, customer_id="c-9",
                     access_code="18005550100", tariff_id=3, tariff_name="retail", prefix="49",
                     rate_id=17, rate_version=2, peak=False, sip_code=200, sip_reason="remote hangup",
                     call_id="abc@127.0.0.1", instance_id="6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b")


def _reference(record: LegRecord) -> dict:
    """What ``to_dict`` returned when it was built on ``dataclasses.asdict``."""
    out = asdict(record)
    for name in ("disconnect_time", "connect_time"):
        if out[name] is not None:
            out[name] = out[name].isoformat(timespec="milliseconds")
    out["amount"] = format(record.amount, "f")
    return out


def test_to_dict_is_what_asdict_gave_for_every_field():
    record = _full()
    out = record.to_dict()
    assert out == _reference(record)
    assert list(out) == [f.name for f in fields(LegRecord)]  # same keys, same order
    assert json.dumps(out, sort_keys=True) == json.dumps(_reference(record), sort_keys=True)
    assert out["amount"] == "0.12345" and out["connect_time"] == "2026-12-07T11:00:00.123+00:00"


def test_to_dict_of_a_record_with_defaults_and_no_connect_time():
    record = LegRecord(session_id="s2", leg="A", account_id="cb1", cli="1", cld="1", node="n",
                       disconnect_time=T0, currency="USD", trigger_mode="simple")
    out = record.to_dict()
    assert out == _reference(record)
    assert out["connect_time"] is None and out["amount"] == "0.00000"


def test_to_dict_round_trips_and_is_a_copy():
    record = _full()
    out = record.to_dict()
    assert LegRecord.from_dict(json.loads(json.dumps(out))) == record
    out["cli"] = "changed"
    assert record.to_dict()["cli"] == "15551234"  # the record is not changed through the dict
