"""The benchmarks' HTTP client connection: kept alive the way a careful client keeps it.

cbserver says in every answer how long it keeps an idle connection open
(``Keep-Alive: timeout=N``) and closes it when that passes. A client that sends its next
request on a connection the server has just closed gets an end of file or a reset instead of
an answer. So this client:

* does not reuse a connection that has been idle for the announced timeout less a margin
  (it opens a new one instead), and
* sends a request again, once, on a new connection when a *reused* connection failed before
  a single byte of the answer came back (RFC 9112 9.3.1). For a POST that is safe with
  cbserver only: bytes arriving on a connection it decided to close are dropped unread
  (``cbserver.connlimit``), so the first copy was never acted on.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable

#: Seconds before the server's announced idle timeout at which a connection is not reused.
MARGIN = 1.0

_TIMEOUT = re.compile(r"timeout=(\d+)")


class KeepAlive:
    """One thread's connection to the web endpoint (not shared between threads)."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection]):
        self.connect = connect
        self.conn: http.client.HTTPConnection | None = None
        self.idle_limit = float("inf")  # until the server announces one
        self.last_used = 0.0
        self.reconnects = 0  # connections opened because the old one had idled too long
        self.retries = 0     # requests sent again after a reused connection failed

    def request(self, do: Callable[[http.client.HTTPConnection], tuple[int, dict]]
                ) -> tuple[int, dict]:
        """Run ``do(conn)``: one request, returning its status and decoded answer, the answer's
        Keep-Alive header under ``"_keep_alive"``.

        Raises what ``do`` raised when a fresh connection failed, or a retry failed."""
        now = time.monotonic()
        if self.conn is not None and now - self.last_used >= self.idle_limit - MARGIN:
            self.close()
            self.reconnects += 1
        reused = self.conn is not None
        if self.conn is None:
            self.conn = self.connect()
        try:
            status, answer = do(self.conn)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # RemoteDisconnected: closed before the status line, i.e. before any answer byte.
            self.close()
            if not reused:
                raise
            self.retries += 1
            self.conn = self.connect()
            try:
                status, answer = do(self.conn)
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        self.last_used = time.monotonic()
        keep_alive = answer.get("_keep_alive") if isinstance(answer, dict) else None
        if keep_alive and (m := _TIMEOUT.search(keep_alive)):
            self.idle_limit = float(m.group(1))
        return status, answer

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
