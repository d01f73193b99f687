"""The callback POST's direct route answers byte for byte as the Klein route does.

``CallbackPostFront`` (cbserver.web.postfront) routes ``POST .../api/v1/callbacks`` without
werkzeug. Two identical harnesses get the same requests as raw HTTP bytes through a real
twisted.web ``Site`` and ``HTTPChannel``: one with the front, one whose site is the Klein
routing alone. Every response (status line, headers, body; only ``Date`` masked), every log
line and the metrics must be the same, over valid requests, every input error, hostile
headers and bodies, paths and hosts the front must leave to Klein, a failing error boundary
and a client that goes away. The front must also have taken the requests it is meant to take
(else the comparison would prove nothing). Deterministic: a ``task.Clock``, no sockets.
"""

from __future__ import annotations

import gc
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Request, Site

from cbserver.web import callback_api, postfront
from tests.support.collector import saving_collector
from tests.unit.web.harness import TOKEN, Harness, app_config

EXTENDED = {"mode": "extended", "account": "cb1001", "password": "right-pw",
            "phone": "+1 555 0100", "destination": "442079460000"}
HOSTED = {"mode": "hosted", "phone": "15550100"}
STRANGER = "192.0.2.7"
DIRECT_START = postfront._PostRender.start  # before any test wraps it


def setups():
    """The instance lists under test: one instance; two, one of them served by host name."""
    return {
        "one": [app_config(hosted_allowed_clients=("127.0.0.0/8", f"token:{TOKEN}"))],
        "hosts": [app_config("Alpha", path="/a", hosts=("a.test",)),
                  app_config("Beta", path="/b", hosted_allowed_clients=())],
    }


class Wire:
    """A harness's site spoken to in raw HTTP; ``fast`` False: the Klein routing alone."""

    def __init__(self, apps, fast: bool):
        self.h = Harness(apps=apps)
        self.front = self.h.web.site()
        if not fast:
            self.h.web.site = lambda: self.front.site
        self.site = Site(self.h.web.resource(), timeout=None, reactor=self.h.clock)
        self.direct = 0

        def counted(render):
            self.direct += 1
            return DIRECT_START(render)

        self._counted = counted

    def exchange(self, raw: bytes, peer: str = "127.0.0.1", lose: bool = False) -> bytes:
        """Send ``raw``; the response bytes (``Date`` and metrics' times masked). ``lose``:
        hang up at once."""
        address = IPv4Address("TCP", peer, 40001)
        channel = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address,
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8901))
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        if lose:
            channel.connectionLost(Failure(ConnectionDone()))
        self.h.clock.advance(0)
        out = transport.value()
        if not lose:
            channel.connectionLost(Failure(ConnectionDone()))
        return unstamped(re.sub(rb"(?im)^date: [^\r\n]*", b"Date: -", out))


def unstamped(text: bytes) -> bytes:
    """``text`` without the metrics' creation times (each harness has its own)."""
    return re.sub(rb"(?m)^(\w+_created(?:\{[^}]*\})?) \S+", rb"\1 -", text)


@pytest.fixture
def logged():
    """Every log event's text while the test runs."""
    lines: list[str] = []

    def observe(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def both(apps, monkeypatch):
    """The harness pair (fast, klein); the fast one counts its direct renders."""
    fast, klein = Wire(apps, True), Wire(apps, False)
    monkeypatch.setattr(postfront._PostRender, "start",
                        lambda render: fast._counted(render) if render.request.site is fast.site
                        else pytest.fail("the Klein-only site took the direct route"))
    return fast, klein


def http(method: str, path: str, body=b"", host: bytes | None = b"cb.test",
         ctype: bytes | None = b"application/json", extra: bytes = b"",
         version: bytes = b"HTTP/1.1") -> bytes:
    """A request's bytes; ``body`` a dict is sent as JSON."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    head = method.encode() + b" " + path.encode("latin-1") + b" " + version + b"\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    if ctype is not None:
        head += b"Content-Type: " + ctype + b"\r\n"
    head += b"Content-Length: %d\r\nConnection: close\r\n" % len(body) + extra
    return head + b"\r\n" + body


def compare(fast: Wire, klein: Wire, logged: list, raw: bytes, peer="127.0.0.1",
            lose=False) -> bytes:
    """Send ``raw`` to both; assert the same bytes and log lines; return the response."""
    start = len(logged)
    a = fast.exchange(raw, peer, lose)
    fast_log = logged[start:]
    start = len(logged)
    b = klein.exchange(raw, peer, lose)
    klein_log = logged[start:]
    assert a == b, raw
    assert fast_log == klein_log, raw
    return a


# Requests the front must take: (name, request bytes, peer), per set-up.
DIRECT = {
    "one": [
        ("extended", http("POST", "/api/v1/callbacks", EXTENDED), "127.0.0.1"),
        ("instance path", http("POST", "/web-callback/api/v1/callbacks", EXTENDED), "127.0.0.1"),
        ("query string", http("POST", "/api/v1/callbacks?x=1&mode=hosted", EXTENDED), "127.0.0.1"),
        ("simple", http("POST", "/api/v1/callbacks", {"mode": "simple", "account": "cb1001",
                                                      "phone": "15550100"}), "127.0.0.1"),
        ("hosted", http("POST", "/api/v1/callbacks", HOSTED), "127.0.0.1"),
        ("hosted stranger", http("POST", "/api/v1/callbacks", HOSTED), STRANGER),
        ("hosted wrong token", http("POST", "/api/v1/callbacks", HOSTED,
                                    extra=b"X-Callback-Token: guess\r\n"), STRANGER),
        ("hosted token", http("POST", "/api/v1/callbacks", HOSTED,
                              extra=b"X-Callback-Token: " + TOKEN.encode() + b"\r\n"), STRANGER),
        ("forged forwarded-for", http("POST", "/api/v1/callbacks", HOSTED,
                                      extra=b"X-Forwarded-For: 127.0.0.1\r\n"), STRANGER),
        ("wrong password", http("POST", "/api/v1/callbacks", {**EXTENDED, "password": "x"}),
         "127.0.0.1"),
        ("bad phone", http("POST", "/api/v1/callbacks", {**EXTENDED, "phone": "12ab"}), "127.0.0.1"),
        ("no mode", http("POST", "/api/v1/callbacks", {"phone": "15550100"}), "127.0.0.1"),
        ("unknown instance", http("POST", "/api/v1/callbacks", {**EXTENDED, "application": "z"}),
         "127.0.0.1"),
        ("form type", http("POST", "/api/v1/callbacks", b"mode=hosted",
                           ctype=b"application/x-www-form-urlencoded"), "127.0.0.1"),
        ("no type", http("POST", "/api/v1/callbacks", EXTENDED, ctype=None), "127.0.0.1"),
        ("not json", http("POST", "/api/v1/callbacks", b"{mode: hosted"), "127.0.0.1"),
        ("array", http("POST", "/api/v1/callbacks", b"[1, 2]"), "127.0.0.1"),
        ("deep", http("POST", "/api/v1/callbacks", b"[" * 5000 + b"]" * 5000), "127.0.0.1"),
        ("nul", http("POST", "/api/v1/callbacks", b'{"phone": "1\\u0000"}'), "127.0.0.1"),
        ("not utf-8", http("POST", "/api/v1/callbacks", b'{"phone": "\xff"}'), "127.0.0.1"),
        ("too large", http("POST", "/api/v1/callbacks", b" " * 17000 + b"{}"), "127.0.0.1"),
        ("empty", http("POST", "/api/v1/callbacks", b""), "127.0.0.1"),
        ("host with port", http("POST", "/api/v1/callbacks", HOSTED, host=b"cb.test:8901"),
         "127.0.0.1"),
        ("ipv6 host", http("POST", "/api/v1/callbacks", HOSTED, host=b"[::1]:8901"), "127.0.0.1"),
        ("no host, HTTP/1.0", http("POST", "/api/v1/callbacks", HOSTED, host=None,
                                   version=b"HTTP/1.0"), "127.0.0.1"),
    ],
    "hosts": [
        ("by host", http("POST", "/api/v1/callbacks", EXTENDED, host=b"a.test"), "127.0.0.1"),
        ("by host, shared needs no name", http("POST", "/api/v1/callbacks", HOSTED,
                                               host=b"A.TEST:8901"), "127.0.0.1"),
        ("shared, named", http("POST", "/api/v1/callbacks", {**EXTENDED, "application": "Beta"}),
         "127.0.0.1"),
        ("shared, unnamed", http("POST", "/api/v1/callbacks", EXTENDED), "127.0.0.1"),
        ("path a", http("POST", "/a/api/v1/callbacks", EXTENDED), "127.0.0.1"),
        ("path b", http("POST", "/b/api/v1/callbacks", HOSTED), "127.0.0.1"),
        ("path b, hosted stranger", http("POST", "/b/api/v1/callbacks", HOSTED), STRANGER),
    ],
}

# Requests the front must leave to Klein.
KLEIN = {
    "one": [
        http("POST", "/api/v1/%63allbacks", EXTENDED), http("POST", "/api/v1/callbacks/", EXTENDED),
        http("POST", "//api/v1/callbacks", EXTENDED), http("POST", "/API/v1/callbacks", EXTENDED),
        http("POST", "/api/v1/callbacks/x", EXTENDED), http("POST", "/api", EXTENDED),
        http("POST", "http://cb.test/api/v1/callbacks", EXTENDED),
        http("GET", "/api/v1/callbacks", ctype=None), http("PUT", "/api/v1/callbacks", EXTENDED),
        http("HEAD", "/api/v1/callbacks", ctype=None),
        http("POST", "/api/v1/callbacks", EXTENDED, host=b"a..b"),  # werkzeug: BadHost, 500
        http("POST", "/api/v1/callbacks", EXTENDED, host=b"x" * 70 + b".test"),
        http("POST", "/api/v1/callbacks", EXTENDED, host=b"\xff\xfe"),  # Klein: 400
        http("GET", "/api/v1/callbacks/cb-0001", ctype=None), http("GET", "/livez", ctype=None),
    ],
    "hosts": [
        http("POST", "/a/api/v1/callbacks", EXTENDED, host=b"a.test"),  # by host: pages
        http("POST", "/api/v1/callbacks/", EXTENDED, host=b"a.test"),
        http("POST", "/b/api/v1/callbacks", EXTENDED, host=b"a.test"),
        http("POST", "/api/v1/callbacks", EXTENDED, host=b"a..test"),
    ],
}


@pytest.mark.parametrize("setup", ["one", "hosts"])
def test_direct_and_klein_routes_answer_the_same(setup, monkeypatch, logged):
    fast, klein = both(setups()[setup], monkeypatch)
    seen = set()
    for _round in range(2):  # the second round meets the rate limits the first one used up
        for name, raw, peer in DIRECT[setup]:
            before = fast.direct
            response = compare(fast, klein, logged, raw, peer)
            assert fast.direct == before + 1, name
            seen.add(response.split(b"\r\n", 1)[0])
        for raw in KLEIN[setup]:
            before = fast.direct
            response = compare(fast, klein, logged, raw)
            assert fast.direct == before, raw
            seen.add(response.split(b"\r\n", 1)[0])
    # The comparison covered acceptance, input errors, refusals, rate limits and Klein's own
    # answers (not-found JSON, werkzeug's bad host, the non-UTF-8 host).
    codes = {int(line.split()[1]) for line in seen}
    assert {202, 400, 403, 404, 429, 500} <= codes
    assert unstamped(fast.h.metrics.render()) == unstamped(klein.h.metrics.render())
    assert [r.mode for r in fast.h.service.requests] == [r.mode for r in klein.h.service.requests]
    fast.h.finish()
    klein.h.finish()


def test_not_ready_and_an_unexpected_failure_answer_the_same(monkeypatch, logged):
    fast, klein = both(setups()["one"], monkeypatch)
    raw = http("POST", "/api/v1/callbacks", EXTENDED)
    fast.h.ready = klein.h.ready = False
    assert b" 503 " in compare(fast, klein, logged, raw).split(b"\r\n")[0]
    fast.h.ready = klein.h.ready = True

    def broken(*_args, **_kw):
        raise RuntimeError("the gateway broke")

    for wire in (fast, klein):
        monkeypatch.setattr(wire.h.web.gateway, "start", broken)
    assert b" 500 " in compare(fast, klein, logged, raw).split(b"\r\n")[0]

    # The error boundary itself fails: Klein's default answer (processingFailed), both ways.
    def boundary_broken(_failure):
        raise ValueError("the boundary broke")

    monkeypatch.setattr(callback_api, "error_response", boundary_broken)
    response = compare(fast, klein, logged, raw)
    assert b" 500 " in response.split(b"\r\n")[0]
    assert fast.direct == 3


def test_a_client_gone_cancels_the_start_and_writes_nothing(monkeypatch, logged):
    fast, klein = both(setups()["one"], monkeypatch)
    cancelled = []
    for wire in (fast, klein):
        monkeypatch.setattr(wire.h.web.gateway, "start",
                            lambda *a, **k: defer.Deferred(lambda d: cancelled.append(d)))
    raw = http("POST", "/api/v1/callbacks", EXTENDED)
    assert compare(fast, klein, logged, raw, lose=True) == b""
    assert len(cancelled) == 2 and fast.direct == 1


def test_the_direct_route_leaves_no_request_in_a_cycle(monkeypatch):
    """An accepted callback and an input error leave nothing for the collector (the Klein
    route left werkzeug's matcher cycle, with the request in it, for every one). A refusal
    raised inside the gateway's ``inlineCallbacks`` still leaves its traceback's frames in a
    cycle on both routes (the gateway's, not the routing's)."""
    fast, _ = both(setups()["one"], monkeypatch)
    with saving_collector():
        for raw in (http("POST", "/api/v1/callbacks", EXTENDED),
                    http("POST", "/api/v1/callbacks", b"nope"),
                    http("POST", "/api/v1/callbacks", EXTENDED, ctype=b"text/plain")):
            fast.exchange(raw, STRANGER)
        gc.collect()
        found = [o for o in gc.garbage if isinstance(o, Request | postfront._PostRender)]
        gc.garbage.clear()
    assert fast.direct == 3 and found == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300),
                      st.dictionaries(st.sampled_from(["mode", "account", "password", "phone",
                                                       "destination", "application"]),
                                      st.one_of(st.text(max_size=20), st.integers(),
                                                st.none(), st.lists(st.integers(), max_size=3)),
                                      max_size=6).map(lambda d: json.dumps(d).encode())),
       ctype=st.sampled_from([b"application/json", b"application/JSON; charset=utf-8",
                              b"text/plain", b"application/json ;;x=\"y\"", b"json"]),
       peer=st.sampled_from(["127.0.0.1", STRANGER]))
def test_any_body_answers_the_same(body, ctype, peer, monkeypatch, logged):
    fast, klein = both(setups()["one"], monkeypatch)
    compare(fast, klein, logged, http("POST", "/api/v1/callbacks", body, ctype=ctype), peer)
    assert fast.direct == 1
