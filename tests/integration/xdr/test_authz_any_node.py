"""Rating-list entries for any node (node ``*``, migration 041) against the real PostgreSQL:
used where the node has none of its own, beaten by the node's own entry, for the callback
tariff (WEBCALLBACK) and for the CALLBACK_FAIL charge; ``cbserver quote --node`` agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest
from cbserver.db.stores import PostgresAuthorizationStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

US = "18005550100"
UK = "442071234567"
QUOTE = [str(Path(sys.executable).with_name("cbserver")), "quote"]


def _authorizer(db, node):
    return Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor, ttl=0), reactor,
                      node=node, special_charge=True)


def _req(session):
    return AuthRequest(session_id=session, account_id="cb1001", cli=US, cld=UK)


def _entries(dsn, *rows):
    """Make product 1's rating list ``rows`` of (node, access_code, tariff_id)."""
    query(dsn, "DELETE FROM rating_entries WHERE product_id = 1")
    for node, code, tariff in rows:
        query(dsn, "INSERT INTO rating_entries (product_id, node, access_code, tariff_id) "
                   "VALUES (1, %s, %s, %s)", (node, code, tariff))


async def _tariffs(db, node, session):
    auth = await _authorizer(db, node).authorize(_req(session))
    return auth.tariff.name, auth.fail_tariff.name if auth.fail_tariff else None


@pytest_twisted.ensureDeferred
async def test_an_entry_for_any_node_is_used_at_every_node(db, cat_dsn):
    _entries(cat_dsn, ("*", "WEBCALLBACK", 1), ("*", "CALLBACK_FAIL", 2))
    assert await _tariffs(db, "node1", "s1") == ("Callback", "CallbackFail")
    assert await _tariffs(db, "edge7", "s2") == ("Callback", "CallbackFail")


@pytest_twisted.ensureDeferred
async def test_the_nodes_own_entry_wins_for_both_services(db, cat_dsn):
    # Any node: WEBCALLBACK -> CallbackFail, CALLBACK_FAIL -> CallbackFail; node1 has its own
    # entries for both, with the other tariff: node1 gets its own, node2 the shared ones.
    _entries(cat_dsn, ("*", "WEBCALLBACK", 2), ("*", "CALLBACK_FAIL", 2),
             ("node1", "WEBCALLBACK", 1), ("node1", "CALLBACK_FAIL", 1))
    assert await _tariffs(db, "node1", "s1") == ("Callback", "Callback")
    assert await _tariffs(db, "node2", "s2") == ("CallbackFail", "CallbackFail")
    # Only the WEBCALLBACK entry of its own: the CALLBACK_FAIL charge falls to '*'.
    query(cat_dsn, "DELETE FROM rating_entries WHERE node = 'node1' AND access_code = 'CALLBACK_FAIL'")
    assert await _tariffs(db, "node1", "s3") == ("Callback", "CallbackFail")


@pytest_twisted.ensureDeferred
async def test_the_access_code_is_decided_before_the_node(db, cat_dsn):
    # The node's own empty-code entry is a fallback for any access code; an entry for any node
    # naming the caller's exact code says what this kind of call costs, so it wins.
    _entries(cat_dsn, ("node1", "", 2), ("*", "WEBCALLBACK", 1))
    assert (await _tariffs(db, "node1", "s1"))[0] == "Callback"
    _entries(cat_dsn, ("node1", "", 2), ("*", "", 1))
    assert (await _tariffs(db, "node1", "s2"))[0] == "CallbackFail"
    assert (await _tariffs(db, "node9", "s3"))[0] == "Callback"


@pytest_twisted.ensureDeferred
async def test_a_node_with_neither_is_refused(db, cat_dsn):
    _entries(cat_dsn, ("node1", "WEBCALLBACK", 1))
    with pytest.raises(AuthorizationError) as info:
        await _authorizer(db, "node2").authorize(_req("s1"))
    assert info.value.reason == "no_tariff" and "node2" in info.value.detail


def test_a_blank_node_stays_refused(cat_dsn):
    import psycopg2
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(cat_dsn, "INSERT INTO rating_entries (product_id, node, access_code, tariff_id) "
                       "VALUES (1, ' ', 'X', 1)")


def _quote(dsn, *args):
    out = subprocess.run([*QUOTE, "--dsn", dsn, "--account", "cb1001", "--number", "1800",
                          "--duration", "61", "--at", "2026-06-01T01:00:00Z", *args],
                         capture_output=True, text=True, timeout=60)
    return out


def test_quote_selects_the_entry_in_force_at_the_node(cat_dsn):
    _entries(cat_dsn, ("*", "WEBCALLBACK", 2), ("node1", "WEBCALLBACK", 1))
    assert json.loads(_quote(cat_dsn, "--node", "node1").stdout)["tariff"] == "Callback"
    assert json.loads(_quote(cat_dsn, "--node", "node5").stdout)["tariff"] == "CallbackFail"
    _entries(cat_dsn, ("node1", "WEBCALLBACK", 1))
    refused = _quote(cat_dsn, "--node", "node5")
    assert refused.returncode != 0 and "nor for any node, '*'" in refused.stderr
