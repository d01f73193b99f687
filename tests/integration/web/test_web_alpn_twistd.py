"""Browsers offer ALPN (RFC 7301): the real server's TLS endpoints must still complete the
handshake and speak HTTP/1.1.

Every browser sends ``h2`` and ``http/1.1`` in its ClientHello. Twisted asks the factory it
wraps in TLS which to select; cbserver's connection limiter wraps the web ``Site``, and when
it gave no answer the handshake failed with an "internal error" alert (Chromium:
ERR_SSL_PROTOCOL_ERROR) on both the callback page's endpoint and the admin endpoint.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.support.console import ConsoleServer, stop

pytestmark = pytest.mark.integration


def handshake(port: int, offer: list[str] | None) -> tuple[str | None, bytes]:
    """TLS to 127.0.0.1:port offering ``offer`` by ALPN; (selected, first bytes of /healthz)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if offer is not None:
        ctx.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return tls.selected_alpn_protocol(), data[:12]


def test_both_tls_endpoints_accept_a_browsers_alpn_offer(pg_dsn, tmp_path):
    srv = None
    try:
        srv = ConsoleServer(tmp_path, pg_dsn)
        for port in (srv.web_port, srv.admin_port):
            selected, answer = handshake(port, ["h2", "http/1.1"])
            assert selected == "http/1.1" and answer.startswith(b"HTTP/1.1 "), port
            selected, answer = handshake(port, None)  # no ALPN at all: as before
            assert selected is None and answer.startswith(b"HTTP/1.1 "), port
        # Offering only a protocol the server does not speak is refused (no silent h2).
        with pytest.raises(ssl.SSLError):
            handshake(srv.web_port, ["h2"])
        assert handshake(srv.web_port, ["h2", "http/1.1"])[1] == b"HTTP/1.1 200"
    finally:
        stop(srv)
