"""Every RFC 4475 torture message through parse + validate, judged by the folder's README.

The expected outcome of each file is read from the table in tests/data/rfc4475/README.md
(the "expected from this server" column), so this test and the README cannot drift apart.
"""

import pytest

from cbserver.sip.message import Request, Response, parse_message
from cbserver.sip.validate import ACCEPT, DROP, RESPOND, check_message
from tests.unit.sip_msg.rfc4475 import DATA, load, readme_expectations

# What the callback UA handles (it is not a registrar and takes no MESSAGE).
UA_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK"})
ROWS = readme_expectations()


def test_readme_lists_all_49_files_and_every_file_is_listed():
    assert len(ROWS) == 49
    assert set(ROWS) == {p.name for p in DATA.glob("*.dat")}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_torture_message(name):
    exp = ROWS[name]
    cls, text, parsed, codes, droppable = exp.cls, exp.text, exp.parsed, exp.codes, exp.droppable
    data = load(name)
    verdict = check_message(data, allowed_methods=UA_METHODS)
    if parsed:
        msg = parse_message(data)
        assert verdict.message is msg or verdict.message is not None
        if isinstance(msg, Response):
            # A valid response is handed on; the transaction layer drops it (no transaction).
            assert verdict.action == ACCEPT, verdict.reason
            return
        error_codes = exp.error_codes
        if error_codes:
            assert verdict.action == RESPOND, verdict.reason
            assert verdict.response.status in error_codes
        elif msg.method not in UA_METHODS:
            # RFC 3261 8.2.1: a method the UA does not handle is refused at once.
            assert verdict.action == RESPOND, verdict.reason
            assert verdict.response.status in (405, 501)
        else:
            # Handed to the UA, which gives its own final answer (never a 400).
            assert verdict.action == ACCEPT, verdict.reason
        _check_well_formed(verdict)
        return
    if cls == "valid":
        pytest.fail(f"README marks {name} valid but gives no 'parsed' outcome: {text}")
    allowed = {RESPOND} if codes else set()
    if droppable:
        allowed.add(DROP)
    assert verdict.action in allowed, verdict.reason
    if verdict.action == RESPOND:
        assert verdict.response.status in codes
        assert not 200 <= verdict.response.status < 300
    _check_well_formed(verdict)


def _check_well_formed(verdict):
    """An immediate response must parse back and be routable like the request."""
    if verdict.action != RESPOND:
        return
    wire = verdict.response.serialize()
    again = parse_message(wire)
    assert isinstance(again, Response)
    request = verdict.message
    assert isinstance(request, Request)
    # RFC 3261 8.2.6.2: Via copied in order; To gets a tag on a final response.
    assert again.headers.get_all("Via") == request.headers.get_all("Via")
    if "To" in request.headers:
        assert ";tag=" in again.headers.get("To").replace(" ", "")


def test_bext01_420_lists_both_unsupported_options():
    verdict = check_message(load("bext01.dat"))
    assert verdict.response.status == 420
    assert verdict.response.headers.get_all("Unsupported") == [
        "nothingSupportsThis", "nothingSupportsThisEither",
    ]  # fmt: skip


def test_dblreq_trailing_octets_are_ignored():
    verdict = check_message(load("dblreq.dat"))
    assert verdict.action == ACCEPT
    assert verdict.message.body == b""


def test_badvers_505_copies_the_odd_via():
    verdict = check_message(load("badvers.dat"))
    assert verdict.response.status == 505
    assert verdict.response.headers.get("Via").startswith("SIP/7.0/UDP c.example.com")
