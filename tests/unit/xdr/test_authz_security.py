"""The authorizer's own defences (issue 14): internal accounts, destinations, failure timing."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.billing import passwords
from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest
from cbserver.billing.destinations import DestinationPolicy, DestinationRefused
from tests.unit.xdr.test_authz_rules import account


class Store:
    """``fetch_account_and_entries`` of one account, with no rating entry (``no_tariff``
    after the identity checks: reaching it means the account was accepted)."""

    instance_id = "i1"

    def __init__(self, info):
        self.info = info

    def fetch_account_and_entries(self, account_id, node, codes, session_id, expiry):
        found = self.info if self.info is not None and self.info.id == account_id else None
        return defer.succeed((found, [], None))


def authorizer(info, **kw):
    checked = []

    def verify(password, stored):
        checked.append(stored)
        return password == "right" and stored != passwords.dummy_hash()

    clock = Clock()
    clock.advance(1_780_000_000)
    a = Authorizer(Store(info), tariffs=None, clock=clock, node="node1", verify_password=verify,
                   run_in_thread=lambda f, *args: defer.maybeDeferred(f, *args), **kw)
    return a, checked


def reason(d):
    out = []
    d.addBoth(out.append)
    assert isinstance(out[0].value, AuthorizationError), out[0]
    return out[0].value.reason


def ask(account_id, **kw):
    values = dict(session_id="s1", account_id=account_id, cli="15550100", cld="18185550123")
    values.update(kw)
    return AuthRequest(**values)


def test_an_internal_account_is_unknown_except_to_its_own_hosted_callback():
    internal = account(id="cb-internal", internal=True)
    a, _ = authorizer(internal, internal_account="cb-internal")
    assert reason(a.authorize(ask("cb-internal"))) == "unknown_account"
    assert reason(a.authorize(ask("cb-internal", password="x", check_password=True))) == "unknown_account"
    assert reason(a.authorize(ask("cb-internal", internal_ok=True))) == "no_tariff"
    # Another instance's internal account: unknown even to this instance's Hosted callback.
    other, _ = authorizer(internal, internal_account="cb-other")
    assert reason(other.authorize(ask("cb-internal", internal_ok=True))) == "unknown_account"


def test_unknown_accounts_cost_a_scrypt_check_too():
    a, checked = authorizer(account(id="cb1", password_hash="right"))
    assert reason(a.authorize(ask("cb404", password="x", check_password=True))) == "unknown_account"
    assert checked == [passwords.dummy_hash()]
    assert reason(a.authorize(ask("cb1", password="x", check_password=True))) == "bad_password"
    assert checked[-1] == "right"
    nopass, checked = authorizer(account(id="cb2"))
    assert reason(nopass.authorize(ask("cb2", password="x", check_password=True))) == "bad_password"
    assert checked == [passwords.dummy_hash()]


def test_the_password_is_checked_before_the_account_s_status_is_told():
    a, _ = authorizer(account(id="cb1", password_hash="right", status="inactive"))
    assert reason(a.authorize(ask("cb1", password="x", check_password=True))) == "bad_password"
    assert reason(a.authorize(ask("cb1", password="y", check_password=True))) == "bad_password"
    assert reason(a.authorize(ask("cb1", password="right", check_password=True))) == "inactive"


def test_the_dummy_hash_costs_what_a_real_one_costs():
    assert passwords.dummy_hash().split("$")[:4] == passwords.hash_password("x").split("$")[:4]


@pytest.mark.parametrize(("policy", "number", "why"), [
    (DestinationPolicy(), "1" * 16, "16 digits"),
    (DestinationPolicy(deny=("1900",)), "19005550123", "prefix 1900"),
    (DestinationPolicy(allow=("1", "55")), "4412345678", "no allowed prefix"),
    (DestinationPolicy(allow=("1",), deny=("1900",)), "19005550123", "prefix 1900"),
])
def test_destination_policy_refuses(policy, number, why):
    with pytest.raises(DestinationRefused) as e:
        policy.check(number)
    assert why in str(e.value) and e.value.reason == "destination_not_allowed"


def test_destination_policy_passes_the_rest():
    DestinationPolicy().check("1" * 15)
    DestinationPolicy(allow=("1", "55"), deny=("1900",)).check("5511987654321")


@pytest.mark.parametrize("field", ["cli", "cld"])
def test_both_numbers_are_checked_before_the_account_is_read(field):
    a, _ = authorizer(None, destinations=DestinationPolicy(deny=("1900",)))
    assert reason(a.authorize(ask("cb1", **{field: "19005550123"}))) == "destination_not_allowed"
    assert reason(a.authorize(ask("cb1", **{field: "1" * 20}))) == "destination_not_allowed"
