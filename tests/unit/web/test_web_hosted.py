"""Hosted mode is shown and accepted only for allowed clients: by network or by token."""

from __future__ import annotations

import ipaddress
import re

import pytest

from cbserver.web.limits import address_allowed, hosted_allowed, token_allowed
from tests.support.metrics import sample
from tests.unit.web.harness import TOKEN, Harness, app_config, visible_text


def tabs(page) -> list[str]:
    return re.findall(r'\?mode=(\w+)"', page.text)


def test_allowed_network_sees_and_uses_hosted():
    h = Harness(apps=[app_config(hosted_allowed_clients=("127.0.0.0/24",))])
    assert tabs(h.get("/web-callback")) == ["extended", "simple", "hosted"]
    assert h.submit("hosted", phone="15550100").code == 303
    assert h.service.requests[0].mode == "hosted"
    h.finish()


def test_unlisted_network_sees_no_hosted_tab_and_is_refused_403():
    h = Harness(apps=[app_config(hosted_allowed_clients=("10.0.0.0/8",))])
    page = h.get("/web-callback?mode=hosted")
    assert tabs(page) == ["extended", "simple"]
    assert '<input type="hidden" name="mode" value="extended">' in page.text
    assert "Have a Hosted access token?" not in page.text  # the instance has no tokens
    r = h.post_form("/web-callback", {"csrf": page.csrf(), "mode": "hosted", "phone": "15550100"})
    assert r.code == 403
    assert "Hosted callback is not available" in visible_text(r.text)
    assert h.service.requests == []
    assert sample(h.metrics, "cbserver_callback_refusals_total",
                  mode="hosted", code="hosted_not_allowed") == 1
    h.finish()


def test_empty_allow_list_means_hosted_is_off_for_everyone():
    h = Harness(apps=[app_config(hosted_allowed_clients=())])
    assert "hosted" not in tabs(h.get("/web-callback"))
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
    assert r.code == 403 and r.json()["error"]["code"] == "hosted_not_allowed"
    h.finish()


def token_harness() -> Harness:
    return Harness(apps=[app_config(hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))])


def test_token_header_unlocks_hosted_on_the_page():
    h = token_harness()
    headers = {"X-Callback-Token": [TOKEN]}
    page = h.get("/web-callback", headers=headers)
    assert tabs(page) == ["extended", "simple", "hosted"]
    r = h.post_form("/web-callback", {"csrf": page.csrf(), "mode": "hosted", "phone": "15550100"},
                    headers=headers)
    assert r.code == 303
    assert h.service.requests[0].client_token == TOKEN
    h.finish()


def test_wrong_token_header_does_not_unlock_hosted():
    h = token_harness()
    page = h.get("/web-callback", headers={"X-Callback-Token": [TOKEN + "x"]})
    assert "hosted" not in tabs(page)
    h.finish()


def test_token_form_sets_a_signed_cookie_that_unlocks_hosted():
    h = token_harness()
    page = h.get("/web-callback")
    assert "Have a Hosted access token?" in page.text
    assert 'action="/web-callback/hosted-access"' in page.text
    r = h.post_form("/web-callback/hosted-access", {"csrf": page.csrf(), "token": TOKEN})
    assert r.code == 303 and r.header("location") == "/web-callback?mode=hosted"
    cookie = r.header("set-cookie")
    assert cookie.startswith("cb_hosted=") and TOKEN not in cookie
    for attr in ("Secure", "HttpOnly", "SameSite=strict", "Path=/web-callback"):
        assert attr in cookie
    page = h.get("/web-callback?mode=hosted")
    assert tabs(page) == ["extended", "simple", "hosted"]
    assert "Have a Hosted access token?" not in page.text
    assert h.submit("hosted", phone="15550100").code == 303
    h.finish()


def test_wrong_token_in_the_form_is_refused_and_sets_no_cookie():
    h = token_harness()
    page = h.get("/web-callback")
    r = h.post_form("/web-callback/hosted-access", {"csrf": page.csrf(), "token": "guess-guess-guess"})
    assert r.code == 403 and "not valid here" in visible_text(r.text)
    assert "cb_hosted" not in (r.header("set-cookie") or "")
    assert "hosted" not in tabs(h.get("/web-callback"))
    h.finish()


def test_token_form_needs_the_csrf_token():
    h = token_harness()
    h.get("/web-callback")
    r = h.post_form("/web-callback/hosted-access", {"token": TOKEN})
    assert r.code == 403 and "cb_hosted" not in (r.header("set-cookie") or "")
    h.finish()


def test_forged_hosted_cookie_is_ignored():
    h = token_harness()
    page = h.get("/web-callback", cookies={"cb_hosted": "0" * 64})
    assert "hosted" not in tabs(page)
    h.finish()


def test_cookie_stops_working_when_the_token_is_removed_from_the_config():
    h = token_harness()
    page = h.get("/web-callback")
    h.post_form("/web-callback/hosted-access", {"csrf": page.csrf(), "token": TOKEN})
    proof = h.web.csrf.hosted_proof("/web-callback", TOKEN)
    other = app_config(hosted_allowed_clients=("10.0.0.0/8", "token:another-token-0123456789"))
    assert not h.web.csrf.hosted_proof_valid(other.url_path, proof, ["another-token-0123456789"])
    assert h.web.csrf.hosted_proof_valid("/web-callback", proof, [TOKEN])
    h.finish()


def test_token_in_the_page_url_is_not_accepted():
    h = token_harness()
    assert "hosted" not in tabs(h.get(f"/web-callback?token={TOKEN}"))
    h.finish()


def test_allow_list_rules():
    app = app_config(hosted_allowed_clients=("192.0.2.0/24", "2001:db8::/32", f"token:{TOKEN}"))
    assert address_allowed(app, "192.0.2.77")
    assert not address_allowed(app, "192.0.3.1")
    assert address_allowed(app, "2001:db8::5")
    assert address_allowed(app, "::ffff:192.0.2.9")  # IPv4-mapped peer of a dual-stack socket
    assert not address_allowed(app, "not-an-address")
    assert token_allowed(app, TOKEN) and not token_allowed(app, TOKEN[:-1]) and not token_allowed(app, "")
    assert not token_allowed(app, None)
    assert hosted_allowed(app, "198.51.100.1", TOKEN)
    assert not hosted_allowed(app, "198.51.100.1", "nope")
    assert not hosted_allowed(app_config(hosted_allowed_clients=()), "127.0.0.1")


def test_token_guesses_count_against_the_client_limit():
    from cbserver.config import LimitsConfig

    h = Harness(apps=[app_config(hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))],
                limits=LimitsConfig(per_client=2, window=3600))
    token = h.get("/web-callback").csrf()
    codes = [h.post_form("/web-callback/hosted-access", {"csrf": token, "token": f"guess-{i:012d}"}).code
             for i in range(2)]
    r = h.post_form("/web-callback/hosted-access", {"csrf": token, "token": TOKEN})
    assert codes == [403, 403] and r.code == 429 and r.header("retry-after")
    assert "cb_hosted" not in (r.header("set-cookie") or "")
    assert sample(h.metrics, "cbserver_rate_limit_refusals_total", kind="client") == 1
    h.finish()


@pytest.mark.parametrize("parsed", [False, True], ids=["as-configured", "parsed-once"])
def test_client_address_behind_trusted_proxies(parsed):
    from cbserver.web.limits import client_address, trusted_networks

    lb = ("10.0.0.0/24",)
    if parsed:  # as the web front end holds them: parsed once, and parsing again keeps them
        lb = trusted_networks(lb)
        assert lb == (ipaddress.ip_network("10.0.0.0/24"),) and trusted_networks(lb) == lb
    assert client_address("198.51.100.9", ["203.0.113.5"], lb) == "198.51.100.9"  # not a proxy
    assert client_address("10.0.0.2", ["203.0.113.5"], lb) == "203.0.113.5"
    assert client_address("10.0.0.2", ["1.2.3.4, 203.0.113.5, 10.0.0.7"], lb) == "203.0.113.5"
    assert client_address("10.0.0.2", ["1.2.3.4", "203.0.113.5"], lb) == "203.0.113.5"
    assert client_address("10.0.0.2", ["203.0.113.5, junk"], lb) == "10.0.0.2"  # forged: no help
    assert client_address("10.0.0.2", [], lb) == "10.0.0.2"
    assert client_address("10.0.0.2", ["203.0.113.5"], ()) == "10.0.0.2"  # nothing trusted


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    h = Harness(apps=[app_config(hosted_allowed_clients=("192.0.2.0/24",))])
    page = h.get("/web-callback", headers={"X-Forwarded-For": ["192.0.2.10"]})
    assert "hosted" not in tabs(page)  # the peer 127.0.0.1 is no trusted proxy
    h.finish()
    h = Harness(apps=[app_config(hosted_allowed_clients=("192.0.2.0/24",))],
                trusted_proxies=("127.0.0.1/32",))
    page = h.get("/web-callback", headers={"X-Forwarded-For": ["192.0.2.10"]})
    assert tabs(page) == ["extended", "simple", "hosted"]
    r = h.post_form("/web-callback", {"csrf": page.csrf(), "mode": "hosted", "phone": "15550100"},
                    headers={"X-Forwarded-For": ["192.0.2.10"]})
    assert r.code == 303 and h.service.requests[0].client_address == "192.0.2.10"
    assert "hosted" not in tabs(h.get("/web-callback", headers={"X-Forwarded-For": ["198.51.100.1"]}))
    h.finish()
