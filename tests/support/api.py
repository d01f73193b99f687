"""The callback JSON API over real HTTP (treq), as the end-to-end tests call it.

Every request is bounded (``HTTP_TIMEOUT``), so a stuck server fails the test that meets it
instead of hanging the run.
"""

from __future__ import annotations

import treq
from twisted.internet import reactor, task

HTTP_TIMEOUT = 10.0


async def post_callback(world, body: dict):
    """POST /api/v1/callbacks: (HTTP status, JSON body, the response)."""
    resp = await treq.post(world.base_url + "/api/v1/callbacks", json=body, timeout=HTTP_TIMEOUT)
    return resp.code, await resp.json(), resp


async def get_json(world, path: str) -> tuple[int, dict]:
    """GET a JSON document from the server's web endpoint: (HTTP status, body)."""
    resp = await treq.get(world.base_url + path, timeout=HTTP_TIMEOUT)
    return resp.code, await resp.json()


async def poll_status(world, cb_id: str, wanted: str, timeout: float = 30.0
                      ) -> tuple[dict, list[str]]:
    """Poll the callback's API status (each answer must be 200) until it is ``wanted``;
    return that status and the statuses seen on the way, in order."""
    deadline = reactor.seconds() + timeout
    seen: list[str] = []
    while reactor.seconds() < deadline:
        code, body = await get_json(world, f"/api/v1/callbacks/{cb_id}")
        assert code == 200, body
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] == wanted:
            return body, seen
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"callback {cb_id} never reached {wanted} within {timeout}s: {seen}")
