"""Connection caps, eviction, the request deadline and the idle timeout (issue 14 item 7),
on a ``task.Clock`` and string transports; the attack itself is
``tests/integration/web/test_web_slow_connections_twistd.py``."""

import resource

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from cbserver import connlimit
from cbserver.connlimit import ConnectionLimiter, DescriptorBudget, LimitedFactory
from cbserver.web.contenttype import install_media_type_parse


class Echo(Protocol):
    def dataReceived(self, data):  # noqa: N802
        self.transport.write(data)


def factory(total=4, per_client=2, deadline=0.0, idle=0.0, budget=None):
    clock = Clock()
    limiter = ConnectionLimiter("test", total, per_client, budget)
    return LimitedFactory(Factory.forProtocol(Echo), limiter, clock, deadline=deadline,
                          idle_timeout=idle), clock


def connect(f, host):
    proto = f.buildProtocol(IPv4Address("TCP", host, 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def lose(proto):
    proto.connectionLost(Failure(ConnectionError("closed")))


def test_per_client_cap_refuses_at_once_and_frees_on_close():
    f, _ = factory(per_client=2)
    (a, _), _second = connect(f, "127.0.0.2"), connect(f, "127.0.0.2")
    _third, t3 = connect(f, "127.0.0.2")
    assert t3.disconnected and f.limiter.refused == 1 and f.limiter.total == 2
    lose(a)
    _, t4 = connect(f, "127.0.0.2")
    assert not t4.disconnected and f.limiter.total == 2


def test_when_full_the_heaviest_client_loses_its_oldest_connection():
    f, _ = factory(total=4, per_client=3)
    conns = [connect(f, "127.0.0.2") for _ in range(3)] + [connect(f, "127.0.0.3")]
    _, fresh = connect(f, "127.0.0.9")  # full: .2 holds the most, its oldest goes
    assert not fresh.disconnected and conns[0][1].disconnected
    assert [t.disconnected for _, t in conns[1:]] == [False, False, False]
    assert f.limiter.evicted == 1 and f.limiter.total == 4
    lose(conns[0][0])  # the evicted connection's close is not counted twice
    assert f.limiter.total == 4
    # Now .2 holds 2, .3 and .9 one each: .3 would tie the heaviest, so it is refused
    # rather than evict; a client with none still gets in.
    _, t = connect(f, "127.0.0.3")
    assert t.disconnected and f.limiter.evicted == 1
    _, t2 = connect(f, "127.0.0.10")
    assert not t2.disconnected and f.limiter.evicted == 2 and conns[1][1].disconnected


def test_the_descriptor_budget_is_shared_and_keeps_the_reserve():
    budget = DescriptorBudget(connlimit.FIXED_RESERVE + 10 + 2, reserve=10)
    assert budget.available == 2
    f1, _ = factory(total=10, per_client=10, budget=budget)
    f2, _ = factory(total=10, per_client=10, budget=budget)
    connect(f1, "127.0.0.2")
    connect(f2, "127.0.0.3")
    _, t = connect(f2, "127.0.0.4")
    assert t.disconnected and budget.used == 2


def test_the_deadline_is_not_extended_by_dripping_and_restarts_after_an_answer():
    f, clock = factory(deadline=10.0)
    proto, t = connect(f, "127.0.0.2")
    for _ in range(9):
        clock.advance(1)
        proto.dataReceived(b"X-Drip: 1\r\n")
    assert not t.disconnected
    clock.advance(1.5)
    assert t.disconnected and f.expired == {"deadline": 1}
    proto, t = connect(f, "127.0.0.3")
    clock.advance(5)
    proto.request_received()
    clock.advance(60)  # handling a request takes what it takes
    assert not t.disconnected
    proto.answered()
    proto.dataReceived(b"GET / HT")  # the next request started, and stalls
    clock.advance(9)
    assert not t.disconnected
    clock.advance(2)
    assert t.disconnected and f.expired == {"deadline": 2}


def test_an_idle_keep_alive_connection_is_closed_gracefully_and_drops_a_racing_request():
    f, clock = factory(deadline=10.0)
    proto, t = connect(f, "127.0.0.2")
    proto.dataReceived(b"one")
    proto.request_received()
    proto.answered()
    assert proto.keep_alive_timeout() == 10.0
    t.clear()
    clock.advance(10.5)  # nothing of a next request arrived: FIN, not RST
    assert t.disconnecting and not t.disconnected and f.expired == {"keep-alive": 1}
    proto.dataReceived(b"POST /api/v1/callbacks")  # raced the close: never reaches the app
    assert t.value() == b""
    clock.advance(connlimit.CLOSE_GRACE + 0.1)  # the client never read: aborted in the end
    assert t.disconnected
    lose(proto)
    assert clock.getDelayedCalls() == [] and f.limiter.total == 0


def test_a_connection_that_never_speaks_is_closed_gracefully_and_closed_means_no_abort():
    f, clock = factory(deadline=10.0)
    proto, t = connect(f, "127.0.0.2")
    clock.advance(10.5)
    assert t.disconnecting and not t.disconnected
    lose(proto)  # the close completed: the fallback abort is cancelled
    assert clock.getDelayedCalls() == [] and not t.disconnected


def test_idle_timeout_restarts_on_every_byte():
    f, clock = factory(idle=30.0)
    proto, t = connect(f, "127.0.0.2")
    for _ in range(5):
        clock.advance(29)
        proto.dataReceived(b"\r\n\r\n")  # RFC 5626 keep-alive
    assert not t.disconnected
    clock.advance(31)
    assert t.disconnected and f.expired == {"idle": 1}
    lose(proto)
    assert clock.getDelayedCalls() == [] and f.limiter.total == 0


def test_raise_descriptor_limit_goes_to_the_hard_limit(monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 20000))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    assert connlimit.raise_descriptor_limit() == (1024, 20000)
    assert calls == [(20000, 20000)]

    def refuse(_which, _limits):
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert connlimit.raise_descriptor_limit() == (1024, 1024)


class _Recorder(Resource):
    """Records each POST's parsed form arguments and its body."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_POST(self, request):  # noqa: N802 - Twisted API
        self.seen.append((request.args, request.content.read()))
        return b"ok"


def _post(content_type: bytes, body: bytes):
    resource = _Recorder()
    site = Site(resource, requestFactory=connlimit.DeadlineRequest)
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: " + content_type
                       + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert transport.value().startswith(b"HTTP/1.1 200")
    return resource.seen


def test_a_json_post_keeps_its_body_and_has_no_form_arguments():
    install_media_type_parse()  # as the server does at start (cbserver.web.contenttype)
    body = b'{"phone": "15551234", "a": "1&b=2"}'
    assert _post(b"application/json", body) == [({}, body)]
    assert _post(b"text/plain; charset=utf-8", b"a=1") == [({}, b"a=1")]


def test_malformed_and_huge_content_types_are_answered_with_the_body_kept():
    install_media_type_parse()
    for ctype in (b"=?utf-8?q?application/x-www-form-urlencoded?=", b"\xff\xfe;;;",
                  b'application/json; a="' + b'"' * 15000, b"x" * 15000 + b"/form"):
        assert _post(ctype, b"a=1") == [({}, b"a=1")], ctype[:40]


def test_form_posts_are_parsed_as_before_whatever_their_case():
    install_media_type_parse()
    for ctype in (b"application/x-www-form-urlencoded", b"Application/X-WWW-Form-Urlencoded; charset=utf-8"):
        assert _post(ctype, b"a=1&b=2") == [({b"a": [b"1"], b"b": [b"2"]}, b"a=1&b=2")]
    multipart = (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--\r\n")
    [(args, _)] = _post(b"multipart/form-data; boundary=XyZ", multipart)
    assert args == {b"a": [b"1"]}
