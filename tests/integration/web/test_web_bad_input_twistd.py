"""Issue 14 items 10 and 11 against the real ``twistd cbserver``, over HTTPS sockets.

Item 10: a deeply nested JSON body and a NUL character (in an admin path, a filter, a body)
are the client's mistake: 400 in each API's JSON envelope, never a 500, never an HTML page.
Item 11: values from a request (mode, account, phone, User-Agent, path) holding a newline or
an ANSI escape reach the log escaped: no forged line, no escape byte in the output.
"""

from __future__ import annotations

import json
import os
import socket
import ssl

import pytest

from tests.support.server import free_port, start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

TOKEN = "t" * 32
FORGED = "2026-01-01T00:00:00+0000 [cbserver] callback requested callback_id=forged"


def raw_request(port: int, method: str, path: bytes, body: bytes = b"",
                headers: dict[str, bytes] | None = None) -> tuple[int, dict, bytes]:
    """Send one request byte for byte (no client-side checks of the path); (status, headers, body)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    lines = [method.encode() + b" " + path + b" HTTP/1.0", b"Host: 127.0.0.1",
             b"Content-Length: " + str(len(body)).encode()]
    lines += [k.encode() + b": " + v for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    hdrs = {}
    for h in header_lines:
        k, _, v = h.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode("latin-1")
    return int(status_line.split()[1]), hdrs, content


def assert_envelope(status: int, hdrs: dict, content: bytes, field: str | None = None) -> dict:
    """A 400 in the JSON error envelope (``{"error": {"code", "message", "field"}}``)."""
    assert status == 400, (status, content[:300])
    assert hdrs["content-type"].startswith("application/json"), hdrs
    err = json.loads(content)["error"]
    assert {"code", "message", "field"} <= set(err), err
    if field is not None:
        assert err["field"] == field, err
    return err


@pytest.fixture
def server(tmp_path, pg_dsn):
    """A running ``twistd cbserver`` with an admin token: (web port, admin port, process)."""
    admin = free_port()
    config, port = write_config(tmp_path, pg_dsn, **{
        'admin_token = ""': f'admin_token = "{TOKEN}"',
        'admin_endpoint = "ssl:8902:interface=127.0.0.1"':
            f'admin_endpoint = "ssl:{admin}:interface=127.0.0.1"',
    })
    proc = start(config)
    try:
        wait_health(port, 200, proc)
        yield port, admin, proc
    finally:
        if proc.poll() is None:
            terminate(proc)


def nested(depth: int) -> bytes:
    return b'{"mode": ' + b"[" * depth + b"]" * depth + b"}"


def test_nested_json_and_nul_are_400_in_the_json_envelope_on_both_apis(server):
    port, admin, proc = server
    auth = {"Authorization": f"Bearer {TOKEN}".encode(), "Content-Type": b"application/json"}
    # 14 KB of nesting: a RecursionError in the parser before.
    deep = nested(7000)
    assert len(deep) > 14_000
    js = {"Content-Type": b"application/json"}
    for path in (b"/api/v1/callbacks", b"/web-callback/api/v1/callbacks"):
        assert_envelope(*raw_request(port, "POST", path, deep, js), field="body")
        nul = json.dumps({"mode": "extended", "account": "cb\x001818000001", "password": "p",
                          "phone": "5511987654321", "destination": "18185550123"}).encode()
        assert_envelope(*raw_request(port, "POST", path, nul, js), field="body")
    assert_envelope(*raw_request(admin, "POST", b"/v1/destinations", deep, auth), field="body")
    assert_envelope(*raw_request(admin, "POST", b"/v1/destinations",
                                 b'{"prefix": "1818\\u0000", "country": "US"}', auth), field="body")
    # A NUL in a path part and in a filter: an HTML "Processing Failed" 500 before.
    assert_envelope(*raw_request(admin, "GET", b"/v1/destinations/1818%00", headers=auth), field="path")
    assert_envelope(*raw_request(admin, "GET", b"/v1/accounts/cb%001", headers=auth), field="path")
    assert_envelope(*raw_request(admin, "GET", b"/v1/destinations?prefix=18%0018", headers=auth),
                    field="query")
    assert_envelope(*raw_request(admin, "PATCH", b"/v1/tariffs/x%00y", b"{}", auth), field="path")
    # The server still serves: nothing above was a crash.
    status, _, content = raw_request(admin, "GET", b"/v1/destinations", headers=auth)
    assert status == 200, content
    code, out = terminate(proc)
    assert code == 0
    assert "RecursionError" not in out and "Traceback" not in out and "Processing Failed" not in out


def test_request_values_reach_the_log_escaped(server):
    port, admin, proc = server
    evil = "\n" + FORGED + " \x1b[2J\x1b[31mred"
    # A header cannot carry a raw newline (it would end the header): the escapes only.
    agent = "ua \x1b[2J\x1b[31mred\x7f\x9b".encode()
    js = {"Content-Type": b"application/json", "User-Agent": agent}
    for field in ("mode", "account", "phone"):
        body = {"mode": "extended", "account": "cb1818000001", "password": "wrong",
                "phone": "5511987654321", "destination": "18185550123"}
        body[field] = body[field] + evil
        status, _, content = raw_request(port, "POST", b"/api/v1/callbacks",
                                         json.dumps(body).encode(), js)
        assert status in (400, 403, 404), content
    # A path with an escape byte and an encoded newline, on the public and the admin side.
    raw_request(port, "GET", b"/no\x1b[2Jsuch%0A" + FORGED.replace(" ", "%20").encode(), headers=js)
    auth = {"Authorization": f"Bearer {TOKEN}".encode(), "Content-Type": b"application/json",
            "User-Agent": agent}
    raw_request(admin, "DELETE", b"/v1/destinations/9%0A" + FORGED.replace(" ", "%20").encode()
                + b"\x1b[2J", headers=auth)
    code, out = terminate(proc)
    assert code == 0
    assert "\x1b" not in out, [line for line in out.splitlines() if "\x1b" in line]
    forged = [line for line in out.splitlines() if line.lstrip().startswith(FORGED[:30])]
    assert forged == [], forged
    # The values are there, escaped, on the lines of their own events.
    assert "callback refused" in out and "\\x0a2026-01-01" in out
    assert "\\x1b[2J" in out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (/proc/PID/stat fields 14 and 15)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_hostile_content_types_are_answered_like_any_other(server):
    # Twisted read a POST's Content-Type with the email package, super-linear on some values
    # (15 KB of quotes: 0.67 s of CPU a request); cbserver reads the media type in one pass
    # (cbserver/web/contenttype.py, docs/security.md section 10).
    port, admin, proc = server
    body = json.dumps({"mode": "extended", "account": "cb1818000001", "password": "wrong",
                       "phone": "5511987654321", "destination": "18185550123"}).encode()
    plain = raw_request(port, "POST", b"/api/v1/callbacks", body,
                        {"Content-Type": b"application/json"})
    before = _cpu_seconds(proc.pid)
    for ctype in (b'application/json; a="' + b'"' * 15000,
                  b"application/x-www-form-urlencoded; " + b'"' * 15000,
                  b"=?utf-8?q?application/x-www-form-urlencoded?=", b"\xff\xfe;;"):
        for _ in range(3):
            status, _, content = raw_request(port, "POST", b"/api/v1/callbacks", body,
                                             {"Content-Type": ctype})
            assert status < 500, (ctype[:40], status, content[:200])
    used = _cpu_seconds(proc.pid) - before
    # The json one is taken as JSON, as a plain one (same refusal: a wrong password).
    status, _, content = raw_request(port, "POST", b"/api/v1/callbacks", body,
                                     {"Content-Type": b'application/json; a="' + b'"' * 15000})
    assert (status, json.loads(content)["error"]["code"]) == (
        plain[0], json.loads(plain[2])["error"]["code"])
    print(f"12 hostile requests: {used:.2f} s of the server's CPU")
    code, out = terminate(proc)
    assert code == 0
    assert "Traceback" not in out and "Processing Failed" not in out
