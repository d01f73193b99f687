"""The admin API's error boundary: every error is the JSON envelope, never an HTML page."""

from __future__ import annotations

import json

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cbserver.billing.validation import NotFound
from cbserver.web.admin import AdminApp

TOKEN = "admin-token-for-the-error-tests"
AUTH = {"Authorization": [f"Bearer {TOKEN}"]}


class Exploding:
    """A catalog whose every call fails with an unexpected error holding a secret."""

    def __getattr__(self, name):
        async def fail(*_args, **_kwargs):
            raise RuntimeError("password=hunter2 leaked from the depths")

        return fail


class Missing:
    """A catalog that knows no destination."""

    async def get_destination(self, prefix):
        raise NotFound("destination", prefix)


@pytest.fixture
def admin(tmp_path):
    return AdminApp(object(), Clock(), TOKEN, tmp_path / "cards")




def call(app: AdminApp, method: str, path: str, **kw):
    """One request through the app's resource: (code, headers, body bytes)."""
    stub = StubTreq(app.resource())
    out = []
    d = stub.request(method, f"http://admin.test{path}", **kw)
    d.addCallback(lambda r: treq.content(r).addCallback(lambda body: (r.code, r.headers, body)))
    d.addBoth(out.append)
    stub.flush()
    assert out, "request did not finish"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def envelope(headers, body: bytes) -> dict:
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert b"<html" not in body.lower()
    doc = json.loads(body)
    assert set(doc) == {"error"} and {"code", "field", "message"} <= set(doc["error"])
    return doc["error"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/nothing-here"), ("POST", "/v1/nothing"), ("DELETE", "/v2/destinations/44"),
    ("GET", "/"), ("PATCH", "/v1/destinations/44/rates"),
])
@pytest.mark.parametrize("auth", [AUTH, {}])
def test_unknown_paths_answer_the_json_404_envelope(admin, method, path, auth):
    code, headers, body = call(admin, method, path, headers=auth)
    assert code == 404
    assert envelope(headers, body)["code"] == "not_found"


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/v1/destinations", "GET, HEAD, POST"),
    ("PUT", "/v1/destinations/44", "DELETE, GET, HEAD, PATCH"),
    ("POST", "/v1/readiness", "GET, HEAD"),
    ("GET", "/v1/tariffs/t1/rates/import", "POST"),
    ("POST", "/openapi.json", "GET, HEAD"),
])
def test_wrong_methods_answer_the_json_405_envelope_with_allow(admin, method, path, allowed):
    code, headers, body = call(admin, method, path, headers=AUTH)
    assert code == 405
    err = envelope(headers, body)
    assert err["code"] == "method_not_allowed" and method in err["message"]
    assert headers.getRawHeaders("allow") == [allowed]


def test_typed_errors_keep_their_status_through_the_boundary(admin):
    code, headers, body = call(admin, "GET", "/v1/destinations")
    assert code == 401 and envelope(headers, body)["code"] == "unauthorized"
    assert headers.getRawHeaders("www-authenticate") == ['Bearer realm="cbserver-admin"']
    admin.catalog = Missing()
    code, headers, body = call(admin, "GET", "/v1/destinations/44", headers=AUTH)
    assert code == 404 and envelope(headers, body)["code"] == "not_found"
    code, headers, body = call(admin, "POST", "/v1/destinations", headers=AUTH, data=b"{not json")
    assert code == 400 and envelope(headers, body)["field"] == "body"


def test_an_unexpected_exception_is_a_500_envelope_without_its_text(admin, logged):
    admin.catalog = Exploding()
    code, headers, body = call(admin, "POST", "/v1/destinations", headers=AUTH, data=b"{}")
    assert code == 500
    err = envelope(headers, body)
    assert err["code"] == "internal_error"
    assert b"hunter2" not in body and b"RuntimeError" not in body and b"Traceback" not in body
    request_id = headers.getRawHeaders("x-request-id")[0]
    assert request_id in err["message"]
    # The log has the failure, under the same request id; the change asked for is audited.
    failed = [e for e in logged if e.get("request_id") == request_id]
    assert failed and failed[0]["log_failure"].check(RuntimeError)
    assert any(e.get("log_format", "").startswith("admin {method} {path} status=")
               and e["status"] == 500 for e in logged)
