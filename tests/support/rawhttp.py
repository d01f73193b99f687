"""HTTP/1.1 on a raw socket for the tests that send what a well-behaved client would not
(pipelined, dripped, binary, oversized requests) and read every answer themselves."""

from __future__ import annotations

import json
import socket


def post_bytes(path: str, body: bytes, ctype: bytes = b"application/json",
               keep_alive: bool = True) -> bytes:
    """The bytes of one HTTP/1.1 POST of ``body`` to ``path``."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + (b"" if keep_alive else b"\r\nConnection: close") + b"\r\n\r\n" + body)


def read_answers(sock: socket.socket, count: int,
                 timeout: float | None = None) -> list[tuple[int, dict, dict]]:
    """``count`` answers read from ``sock``: (status, headers, decoded JSON body); a body
    framed by Content-Length or chunked (RFC 9112 6.3, 7.1). ``timeout``: set on the socket
    first (None: leave it as it is)."""
    if timeout is not None:
        sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < count:
        buf = _fill(sock, buf, lambda b: b"\r\n\r\n" in b, f"after {len(out)} answers")
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while True:
                buf = _fill(sock, buf, lambda b: b"\r\n" in b, "inside a chunk size")
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                buf = _fill(sock, buf, lambda b, n=size: len(b) >= n + 2, "inside a chunk")
                data, buf = data + buf[:size], buf[size + 2:]
                if not size:
                    break
        else:
            size = int(headers.get("content-length", "0"))
            buf = _fill(sock, buf, lambda b, n=size: len(b) >= n, "inside a body")
            data, buf = buf[:size], buf[size:]
        out.append((int(lines[0].split()[1]), headers, json.loads(data or b"{}")))
    return out


def _fill(sock: socket.socket, buf: bytes, enough, where: str) -> bytes:
    """``buf`` with more of the connection's bytes until ``enough(buf)``."""
    while not enough(buf):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed {where}: {buf[:200]!r}"
        buf += chunk
    return buf
