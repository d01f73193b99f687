"""Choosing an instance by host name (``hosts``): its page, status and API at the root."""

from __future__ import annotations

import dataclasses
import re

from klein.resource import KleinResource

from cbserver.web.app import HostDispatch
from cbserver.web.hosts import HostTable, normalise_host
from cbserver.web.live import LiveSite
from cbserver.web.postfront import CallbackPostFront
from tests.unit.web.harness import TOKEN, Harness, app_config

A_HOST = "cb.example.net"
B_HOST = "callback.example.org"


def two_instances(**web_kw) -> Harness:
    """Instance A at /a (host cb.example.net), B at /b (host callback.example.org)."""
    return Harness(apps=[app_config("Alpha callback", path="/a", hosts=(A_HOST,)),
                         app_config("Beta callback", path="/b", hosts=(B_HOST,))], **web_kw)


def host(name: str, **extra) -> dict:
    """Request headers naming ``name`` as the Host (plus ``extra`` headers)."""
    return {"Host": [name], **{k.replace("_", "-"): [v] for k, v in extra.items()}}


def title(reply) -> str:
    m = re.search(r"<title>([^<]*)</title>", reply.text)
    return m.group(1) if m else ""


def test_the_host_header_picks_the_instance_page_at_the_root():
    h = two_instances()
    a = h.get("/", headers=host(A_HOST))
    assert a.code == 200 and title(a).endswith("Alpha callback")
    # Links and the form lead back to the root routes of this host, not to /a.
    assert 'action="/"' in a.text and 'href="/?mode=simple"' in a.text
    assert 'action="/a"' not in a.text
    b = h.get("/", headers=host(B_HOST))
    assert b.code == 200 and title(b).endswith("Beta callback")
    h.finish()


def test_host_with_a_port_upper_case_or_a_trailing_dot_still_matches():
    h = two_instances()
    for name in ("CB.Example.NET:8901", "cb.example.net:443", "cb.example.net."):
        r = h.get("/", headers=host(name))
        assert r.code == 200 and title(r).endswith("Alpha callback"), name
    h.finish()


def test_form_post_by_host_gives_host_relative_status_links():
    h = two_instances()
    page = h.get("/?mode=simple", headers=host(A_HOST))
    r = h.post_form("/", {"csrf": page.csrf(), "mode": "simple", "account": "cb1001",
                          "phone": "15550100"}, headers=host(A_HOST))
    assert r.code == 303 and r.header("location") == "/status/cb-0001"
    assert h.service.requests[0].application == "Alpha callback"
    status = h.get("/status/cb-0001", headers=host(A_HOST))
    assert status.code == 200 and title(status).endswith("Alpha callback")
    assert 'data-status-url="/api/v1/callbacks/cb-0001"' in status.text
    assert 'href="/"' in status.text and 'href="/a"' not in status.text
    # The script's JSON answer carries the same host-relative URLs.
    r = h.post_form("/", {"csrf": page.csrf(), "mode": "simple", "account": "cb1001",
                          "phone": "15550101"},
                    headers={**host(A_HOST), "Accept": ["application/json"]})
    assert r.code == 202
    assert r.json()["status_url"] == "/status/cb-0002"
    assert r.json()["api_url"] == "/api/v1/callbacks/cb-0002"
    h.finish()


def test_path_routes_of_an_instance_with_hosts_keep_their_path_links():
    h = two_instances()
    page = h.get("/a")
    assert page.code == 200 and 'action="/a"' in page.text
    r = h.post_form("/a", {"csrf": page.csrf(), "mode": "simple", "account": "cb1001",
                           "phone": "15550100"})
    assert r.code == 303 and r.header("location") == "/a/status/cb-0001"
    # Under its own host name the path routes answer too (and every other path as before).
    assert title(h.get("/a", headers=host(A_HOST))).endswith("Alpha callback")
    assert title(h.get("/b", headers=host(A_HOST))).endswith("Beta callback")
    h.finish()


def test_api_by_host_starts_a_callback_of_that_instance_without_naming_it():
    h = two_instances()
    body = {"mode": "simple", "account": "cb1001", "phone": "15550100"}
    r = h.post_json("/api/v1/callbacks", body, headers=host(A_HOST))
    assert r.code == 202 and r.header("location") == "/api/v1/callbacks/cb-0001"
    assert h.service.requests[0].application == "Alpha callback"
    got = h.get("/api/v1/callbacks/cb-0001", headers=host(A_HOST))
    assert got.code == 200 and got.json()["application"] == "Alpha callback"
    # Without a host name that picks it, two instances need "application".
    r = h.post_json("/api/v1/callbacks", body)
    assert r.code == 400 and r.json()["error"]["field"] == "application"
    h.finish()


def test_an_instance_chosen_by_host_sees_only_its_own_callbacks():
    h = two_instances()
    body = {"mode": "simple", "account": "cb1001", "phone": "15550100"}
    assert h.post_json("/api/v1/callbacks", body, headers=host(A_HOST)).code == 202
    r = h.get("/api/v1/callbacks/cb-0001", headers=host(B_HOST))
    assert r.code == 404 and r.json()["error"]["code"] == "not_found"
    assert h.get("/status/cb-0001", headers=host(B_HOST)).code == 404
    assert h.get("/status/cb-0001", headers=host(A_HOST)).code == 200
    assert h.get("/b/api/v1/callbacks/cb-0001").code == 404  # as by path, as before
    h.finish()


def test_an_unknown_host_is_routed_by_path_with_the_default_instance_at_the_root():
    h = two_instances()
    for name in ("other.example.com", "example.net", "a.cb.example.net", "127.0.0.1:8901", ""):
        root = h.get("/", headers=host(name))  # the first instance, the manual's address
        assert root.code == 200 and title(root).endswith("Alpha callback"), name
        assert title(h.get("/b", headers=host(name))).endswith("Beta callback"), name
    assert h.get("/status/cb-0001", headers=host("other.example.com")).code == 404
    h.finish()


def test_shared_routes_answer_under_a_host_name():
    h = two_instances()
    assert h.get("/static/page.css", headers=host(A_HOST)).code == 200
    assert h.get("/metrics", headers=host(A_HOST)).code == 200
    assert h.get("/api/v1/openapi.json", headers=host(A_HOST)).code == 200
    r = h.get("/api/v1/nothing", headers=host(A_HOST))
    assert r.code == 404 and r.json()["error"]["code"] == "not_found"
    h.finish()


def test_x_forwarded_host_is_believed_only_from_a_trusted_proxy():
    # B is not the default instance, so only a believed header can pick it at the root.
    fwd = host("lb.internal", x_forwarded_host=B_HOST)
    h = two_instances()  # nothing trusted: the Host header alone counts
    assert title(h.get("/", headers=fwd)).endswith("Alpha callback")
    h.finish()
    h = two_instances(trusted_proxies=("10.0.0.0/8",))  # the peer 127.0.0.1 is not one
    assert title(h.get("/", headers=fwd)).endswith("Alpha callback")
    h.finish()
    h = two_instances(trusted_proxies=("127.0.0.1/32",))
    assert title(h.get("/", headers=fwd)).endswith("Beta callback")
    # The right-most entry is the one the proxy wrote; the client's own entries are ignored.
    forged = host("lb.internal", x_forwarded_host=f"{A_HOST}, {B_HOST}")
    assert title(h.get("/", headers=forged)).endswith("Beta callback")
    other = host("lb.internal", x_forwarded_host=f"{B_HOST}, x.test")
    assert title(h.get("/", headers=other)).endswith("Alpha callback")
    # A trusted proxy that sends no X-Forwarded-Host: its Host header is used.
    assert title(h.get("/", headers=host(B_HOST))).endswith("Beta callback")
    h.finish()


def test_hosted_token_form_by_host_posts_and_redirects_to_the_root():
    h = Harness(apps=[app_config(hosts=(A_HOST,),
                                 hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))])
    page = h.get("/", headers=host(A_HOST))
    assert 'action="/hosted-access"' in page.text
    r = h.post_form("/hosted-access", {"csrf": page.csrf(), "token": TOKEN},
                    headers=host(A_HOST))
    assert r.code == 303 and r.header("location") == "/?mode=hosted"
    assert "Path=/;" in r.header("set-cookie") + ";"
    h.finish()


def test_a_hosted_token_form_at_the_root_path_posts_to_a_local_url():
    h = Harness(apps=[app_config(path="/", hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))])
    page = h.get("/")
    assert 'action="/hosted-access"' in page.text and "//hosted-access" not in page.text
    r = h.post_form("/hosted-access", {"csrf": page.csrf(), "token": TOKEN})
    assert r.code == 303 and r.header("location") == "/?mode=hosted"
    h.finish()


def test_without_hosts_the_site_root_is_the_path_app_alone():
    h = Harness()
    # The root follows the catalog's applications (LiveSite); the site behind it is built
    # from the applications of the moment, behind the callback POST's own route.
    assert isinstance(h.web.resource(), LiveSite)
    assert isinstance(h.web.site(), CallbackPostFront)
    assert isinstance(h.web.site().site, KleinResource)
    h.finish()
    h = two_instances()
    assert isinstance(h.web.site().site, HostDispatch)
    h.finish()


def test_wildcard_hosts_stand_for_one_label_and_exact_names_win():
    a = app_config("Alpha", path="/a", hosts=("*.example.com",))
    b = app_config("Beta", path="/b", hosts=("shop.example.com",))
    table = HostTable([a, b])
    assert table.lookup("x.example.com") is a
    assert table.lookup("shop.example.com") is b
    assert table.lookup("example.com") is None
    assert table.lookup("a.b.example.com") is None
    assert table.lookup("") is None
    assert not HostTable([app_config()])


def test_normalise_host():
    assert normalise_host("CB.Example.NET:8901") == "cb.example.net"
    assert normalise_host(" cb.example.net. ") == "cb.example.net"
    assert normalise_host("[2001:DB8::1]:8901") == "[2001:db8::1]"
    assert normalise_host("[broken") == ""
    assert normalise_host("") == ""


def test_pages_follow_the_applications_without_restart():
    # The catalog changes the applications (CallbackWeb.set_applications): the next request
    # is routed by the new paths and host names; a removed instance's page is 404.
    h = two_instances()
    assert h.get("/c").code == 404
    gamma = app_config("Gamma callback", path="/c", hosts=("gamma.example.net",))
    h.web.set_applications([*h.web.config.application, gamma])
    assert title(h.get("/c")).endswith("Gamma callback")
    assert title(h.get("/", headers=host("gamma.example.net"))).endswith("Gamma callback")
    r = h.post_json("/api/v1/callbacks", {"mode": "simple", "account": "cb1001",
                                          "phone": "15550100"}, headers=host("gamma.example.net"))
    assert r.code == 202 and h.service.requests[-1].application == "Gamma callback"
    # A changed path moves the page; removing Alpha leaves its path and host name 404.
    moved = dataclasses.replace(gamma, path="/g")
    h.web.set_applications([h.web.apps["Beta callback"], moved])
    assert h.get("/c").code == 404 and title(h.get("/g")).endswith("Gamma callback")
    assert h.get("/a").code == 404
    # Alpha's host name is no longer listed: "/" there is the default instance's page
    # (the first application, Beta, now), as for any unlisted name.
    assert title(h.get("/", headers=host(A_HOST))).endswith("Beta callback")
    assert title(h.get("/b")).endswith("Beta callback")
    h.finish()
