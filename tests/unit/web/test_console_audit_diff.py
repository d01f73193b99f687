"""The Audit log screen's per-field diff and its time filters (cbserver/web/console/screens_audit.py)."""

from __future__ import annotations

import pytest

from cbserver.billing.validation import ValidationError
from cbserver.web.console.screens_apps import APPLICATION_FIELDS, GROUPS
from cbserver.web.console.screens_audit import _time, diff


def test_an_update_shows_only_the_fields_that_changed():
    before = {"name": "A", "second_number": "1800", "hosts": ["a.example"], "updated_at": "t1"}
    after = {"name": "A", "second_number": "1801", "hosts": [], "updated_at": "t2", "new": True}
    assert diff(before, after) == [("second_number", "1800", "1801"),
                                   ("hosts", '["a.example"]', "[]"), ("new", "(none)", "true")]


def test_a_create_shows_what_was_set_and_a_delete_what_was_there():
    assert diff(None, {"prefix": "1818", "country": ""}) == [("prefix", "", "1818"),
                                                              ("country", "", '""')]
    assert diff({"prefix": "1818", "n": 2}, None) == [("prefix", "1818", ""), ("n", "2", "")]
    assert diff(None, "10.00") == [("value", "", "10.00")]
    assert diff({"a": 1}, {"a": 1}) == []


def test_a_time_without_a_zone_is_utc_and_garbage_names_its_field():
    assert _time("since", "2027-01-31 08:00") == "2027-01-31T08:00:00+00:00"
    assert _time("since", "2027-01-31") == "2027-01-31T00:00:00+00:00"
    assert _time("until", "2027-01-31T08:00:00-03:00") == "2027-01-31T08:00:00-03:00"
    with pytest.raises(ValidationError) as e:
        _time("until", "2027-02-31 08:00")
    assert e.value.field == "until"


def test_the_application_form_follows_the_manuals_panels():
    assert [g for g, _ in GROUPS] == ["Entry point", "Authorization", "Accounting",
                                      "Translation rules", "Prompts & notifications",
                                      "Application specific"]
    names = [f.name for f in APPLICATION_FIELDS]
    assert names.index("callback_page_address") < names.index("second_number") < names.index(
        "access_code") < names.index("internal_account") < names.index(
        "special_charge_if_legb_fails") < names.index("account_id_translation_rule") < names.index(
        "prompts") < names.index("use_account_id_as_ani")
