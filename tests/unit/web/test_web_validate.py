"""Input checks shared by the page and the API: number normalisation, fields per mode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbserver.web.api import InvalidInput, normalise_number, valid_callback_id, validate
from cbserver.web.callback_pages import build_callback_web
from tests.unit.web.harness import Harness, app_config

JUNK = st.sampled_from([" ", "-", ".", "(", ")", "/", "  "])


@given(st.text("0123456789", min_size=3, max_size=20), st.lists(JUNK, max_size=5), st.booleans())
def test_numbers_keep_their_digits_whatever_the_punctuation(digits, junk, plus):
    typed = ("+" if plus else "") + "".join(d + (junk[i] if i < len(junk) else "")
                                            for i, d in enumerate(digits))
    assert normalise_number(typed) == digits


@pytest.mark.parametrize("bad", ["", "12", "1" * 21, "12a45", "+", "++123", "123+4", "１２３"])
def test_bad_numbers_are_refused(bad):
    with pytest.raises(ValueError):
        normalise_number(bad)


def test_fields_a_mode_does_not_use_are_dropped():
    req = validate(app_config(), "hosted", {"phone": "15550100", "account": "x", "password": "y",
                                            "destination": "1"}, "192.0.2.1")
    assert (req.account, req.password, req.destination) == (None, None, None)
    req = validate(app_config(), "simple", {"phone": "15550100", "account": "cb1", "password": "y"},
                   "192.0.2.1")
    assert req.password is None and req.destination is None


def test_passwords_keep_their_spaces_and_are_hidden_from_repr():
    req = validate(app_config(), "extended", {"account": "cb1", "password": " pass word ",
                                              "phone": "15550100", "destination": "15550101"}, "")
    assert req.password == " pass word "
    assert "pass word" not in repr(req)


def test_invalid_input_names_every_bad_field_in_order():
    with pytest.raises(InvalidInput) as e:
        validate(app_config(), "extended", {"account": "", "phone": "x"}, "")
    assert list(e.value.errors) == ["account", "password", "phone", "destination"]
    assert e.value.field == "account" and e.value.http_status == 400


def test_callback_ids_are_checked_before_any_lookup():
    assert valid_callback_id("5f0c3a9e1b2d4c6e8f001122aabbccdd")
    assert not valid_callback_id("")
    assert not valid_callback_id("../etc")
    assert not valid_callback_id("a" * 81)


class Db:
    ready = True


def test_build_callback_web_wires_the_postgresql_store_and_readiness():
    h = Harness()
    draining = [False]
    db = Db()
    web = build_callback_web(h.config, db, h.service, h.clock, h.metrics,
                             accepting=lambda: not draining[0])
    assert web.gateway.ready()
    draining[0] = True
    assert not web.gateway.ready()
    draining[0] = False
    db.ready = False
    assert not web.gateway.ready()
    assert web.csrf.secure  # the example config's endpoint is ssl:
    assert web.gateway.limiter.store.db is db
    h.finish()
