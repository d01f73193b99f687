"""A twisted.web ``Site`` listening on 127.0.0.1 and a plain client socket connected to it,
for tests that watch what really reaches the client's socket."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from twisted.internet import reactor
from twisted.web.server import Site


@contextlib.asynccontextmanager
async def site_and_client(resource, request_factory=None) -> AsyncIterator[socket.socket]:
    """Serve ``resource`` (with ``request_factory``, else Twisted's ``Request``) on a free
    loopback port and yield a blocking client socket connected to it (10 s timeout); the
    socket is closed and the port stopped when the block ends."""
    site = Site(resource) if request_factory is None else Site(resource,
                                                                requestFactory=request_factory)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
        try:
            yield client
        finally:
            client.close()
    finally:
        await port.stopListening()
