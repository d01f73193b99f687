"""The operator's console against strangers, on the real ``twistd cbserver`` over HTTPS.

One server for the module (PostgreSQL database of its own, operators made by the real CLI:
``alice`` administrator, ``rita`` read-only; idle timeout 3 s, 3 failed logins allowed). Each
test is a stranger's attempt: no session, a forged or missing CSRF token, a planted session
id, a login flood, an idle session, markup in a destination's name, a read-only operator
trying to change things. Every refusal must also have changed nothing.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import _scratch_database
from tests.support.console import (
    ADMIN_PASSWORD,
    READER_PASSWORD,
    Client,
    ConsoleServer,
    add_operator,
    stop,
)

pytestmark = pytest.mark.integration

COOKIE = "__Host-cbs_console"
VICTOR = "Vict0r-console-pw"


@pytest.fixture(scope="module")
def server(pg_cluster, pg_template, tmp_path_factory):
    """The server, shared by the module's tests."""
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    dsn = next(dbs)
    srv = None
    try:
        srv = ConsoleServer(tmp_path_factory.mktemp("console"), dsn, console_idle_timeout="3",
                            console_login_attempts="3")
        yield srv
    finally:
        stop(srv)
        next(dbs, None)


def admin(server) -> Client:
    """A client logged in as the administrator."""
    c = Client(server.base)
    assert c.login("alice", ADMIN_PASSWORD).status == 303
    return c


def test_no_session_is_sent_to_the_login_and_refused_changes(server):
    c = Client(server.base)
    r = c.get("/ui/destinations")
    assert r.status == 303 and r.header("Location").startswith("/ui/login?next=")
    r = c.post("/ui/destinations/new", {"prefix": "55", "csrf": "x"})
    assert r.status == 401
    a = admin(server)
    assert "55" not in a.get("/ui/destinations?q=55").text.split("<tbody>")[1]


def test_login_sets_a_host_prefixed_strict_cookie_and_a_new_id(server):
    c = Client(server.base)
    c.cookies[COOKIE] = "planted-by-an-attacker-0123456789"  # session fixation attempt
    r = c.login("alice", ADMIN_PASSWORD)
    assert r.status == 303 and r.header("Location") == "/ui/"
    line = r.set_cookies()[COOKIE]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag.lower() in line.lower(), line
    assert "domain=" not in line.lower()
    assert c.cookies[COOKIE] != "planted-by-an-attacker-0123456789"
    assert c.get("/ui/").status == 200
    # The planted id opens nothing.
    stranger = Client(server.base)
    stranger.cookies[COOKIE] = "planted-by-an-attacker-0123456789"
    assert stranger.get("/ui/").status == 303


def test_forged_or_missing_csrf_token_is_refused_and_changes_nothing(server):
    a = admin(server)
    for token in ("forged-token", ""):
        r = a.post("/ui/destinations/new", {"csrf": token, "prefix": "4471",
                                             "country": "UK", "description": "x"})
        assert r.status == 403
    other = admin(server)  # another session's token is no good either
    r = a.post("/ui/destinations/new", {"csrf": other.get("/ui/destinations/new").csrf(),
                                         "prefix": "4471"})
    assert r.status == 403
    assert a.get("/ui/destinations/4471").status == 404


def test_wrong_password_then_flood_is_limited_even_for_the_right_password(server):
    c = Client(server.base)
    r = c.login("alice", "wrong-password-1")
    assert r.status == 401 and "Wrong name or password" in r.text
    unknown = c.login("nobody", "wrong-password-1")
    assert unknown.status == 401 and "Wrong name or password" in unknown.text  # same answer
    # A victim of a guesser: three failures for "victor" from this client...
    assert add_operator(server.config, "victor", "readonly", VICTOR).returncode == 0
    for _ in range(3):
        assert c.login("victor", "not-his-password").status == 401
    limited = c.login("victor", VICTOR)
    assert limited.status == 429 and limited.header("Retry-After")
    assert COOKIE not in c.cookies
    # ...while alice (another operator, 1 failure so far) still gets in.
    assert c.login("alice", ADMIN_PASSWORD).status == 303


def test_idle_session_ends(server):
    a = admin(server)
    assert a.get("/ui/").status == 200
    time.sleep(4.5)  # console_idle_timeout = 3
    r = a.get("/ui/")
    assert r.status == 303 and r.header("Location").startswith("/ui/login")


def test_markup_in_a_destination_is_shown_escaped(server):
    a = admin(server)
    page = a.get("/ui/destinations/new")
    r = a.post("/ui/destinations/new", {"csrf": page.csrf(), "prefix": "99988",
                                         "country": "<script>alert(1)</script>",
                                         "description": '"><img src=x onerror=alert(2)>'})
    assert r.status == 303
    listed = a.get("/ui/destinations?q=99988")
    assert "<script>alert(1)" not in listed.text and "<img src=x" not in listed.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listed.text
    assert "content-security-policy" in {k.lower() for k in listed.headers.keys()}


def test_read_only_operator_sees_but_is_refused_every_change(server):
    a = admin(server)
    page = a.get("/ui/destinations/new")
    assert a.post("/ui/destinations/new", {"csrf": page.csrf(), "prefix": "3312",
                                            "country": "FR"}).status == 303
    r = Client(server.base)
    assert r.login("rita", READER_PASSWORD).status == 303
    listed = r.get("/ui/destinations")
    assert listed.status == 200 and "3312" in listed.text
    assert "New destination" not in listed.text
    shown = r.get("/ui/destinations/3312")
    assert "Delete this destination" not in shown.text and ">Save<" not in shown.text
    token = shown.csrf()  # her own, valid token (the logout form's)
    for path, fields in (("/ui/destinations/new", {"prefix": "3313"}),
                         ("/ui/destinations/3312", {"country": "Spain"}),
                         ("/ui/destinations/3312/delete", {}),
                         ("/ui/generator", {"customer": "x", "product": "y", "quantity": "1",
                                            "length": "8"})):
        assert r.post(path, {"csrf": token, **fields}).status == 403, path
    # The generator's CSV holds passwords: not for her, whatever the job.
    assert r.get("/ui/generator/jobs/0123456789abcdef/csv").status == 403
    assert "FR" in a.get("/ui/destinations/3312").text
    assert a.get("/ui/destinations/3313").status == 404
    # Logging out ends the session on the server, not only in the browser.
    saved = dict(r.cookies)
    assert r.post("/ui/logout", {"csrf": token}).status == 303
    r.cookies = saved
    assert r.get("/ui/").status == 303
