"""``FlushingRequest`` on a real TCP connection: a finished answer is in the client's socket
before the reactor's next turn (with Twisted's plain ``Request`` it is not), and a
connection the answer closes is still closed by the reactor."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cbserver.web.flush import FlushingRequest
from tests.support.loopback import site_and_client

pytestmark = pytest.mark.integration


class Peek(Resource):
    """Answers, then looks (without waiting) at what the client's socket already holds."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.client: socket.socket | None = None
        self.seen = defer.Deferred()

    def render_GET(self, request):  # noqa: N802 - Twisted API
        request.setHeader(b"content-length", b"2")
        request.write(b"ok")
        request.finish()
        self.client.setblocking(False)
        try:
            got = self.client.recv(65536)
        except BlockingIOError:
            got = b""
        self.seen.callback(got)
        return NOT_DONE_YET


async def answer_seen_in_the_same_turn(request_factory, connection: bytes = b"") -> bytes:
    """What the client holds right after the server finished its answer (same reactor turn)."""
    resource = Peek()
    async with site_and_client(resource, request_factory) as client:
        resource.client = client
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + connection + b"\r\n")
        return await resource.seen


@pytest_twisted.ensureDeferred
async def test_a_finished_answer_is_sent_at_once_not_on_the_next_turn():
    got = await answer_seen_in_the_same_turn(FlushingRequest)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nok")
    # The control: Twisted's own request leaves it buffered for the reactor's next turn.
    assert await answer_seen_in_the_same_turn(Request) == b""


@pytest_twisted.ensureDeferred
async def test_an_answer_that_closes_the_connection_is_closed_by_the_reactor():
    resource = Peek()
    async with site_and_client(resource, FlushingRequest) as client:
        resource.client = client
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await resource.seen
        for _ in range(100):  # the reactor sends what is left and closes: end of file
            await defer.Deferred(lambda d: None).addTimeout(0.05, reactor).addErrback(lambda _: None)
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("the server never closed the connection")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")
