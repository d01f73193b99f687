"""A small client driving ``AdminApp`` through treq's ``StubTreq`` on the real reactor."""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet import reactor, task

from cbserver.web.admin import AdminApp

TOKEN = "test-admin-token-0123456789"


class AdminClient:
    """Sends JSON requests to an ``AdminApp`` and returns (status, parsed body)."""

    def __init__(self, db, csv_dir, token: str = TOKEN, cfg=None):
        self.app = AdminApp(db, reactor, token, csv_dir, cfg)
        self.stub = StubTreq(self.app.resource())

    async def _settle(self, d):
        # The app answers after real PostgreSQL round trips: pump the in-memory
        # connection until the response has arrived.
        done: list = []

        def arrived(result):
            done.append(True)
            return result

        d.addBoth(arrived)
        while not done:
            self.stub.flush()
            await task.deferLater(reactor, 0.002, lambda: None)
        return await d

    async def call(self, method: str, path: str, body=None, token: str | None = TOKEN,
                   raw: bytes | None = None, content_type: bytes = b"application/json"):
        """One request; ``body`` is sent as JSON (or ``raw`` as ``content_type``); returns
        (status, JSON body or None)."""
        headers = {b"content-type": [content_type]}
        if token is not None:
            headers[b"authorization"] = [f"Bearer {token}".encode()]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await self._settle(self.stub.request(method, f"http://admin.test{path}", data=data,
                                                        headers=headers))
        content = await self._settle(response.content())
        return response.code, (json.loads(content) if content else None)

    async def ok(self, method: str, path: str, body=None, expect: int | None = None):
        """A request that must succeed; returns its JSON body."""
        code, data = await self.call(method, path, body)
        want = expect or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert code == want, (code, data)
        return data
