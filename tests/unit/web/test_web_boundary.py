"""Error boundaries of the public site: JSON below /api (every mount), HTML on the pages."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from cbserver.callback.api import CallbackRefused
from tests.unit.web.harness import Harness, app_config

A_HOST = "cb.example.net"




def json_error(reply) -> dict:
    assert reply.header("content-type") == "application/json"
    assert b"<html" not in reply.body.lower()
    return reply.json()["error"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/web-callback/api/v1/nothing"), ("GET", "/web-callback/api/v1/callbacks"),
    ("DELETE", "/web-callback/api/v1/callbacks/cb-0001"), ("PUT", "/api/v1/callbacks"),
    ("GET", "/api"), ("GET", "/api/"), ("POST", "/api/v1/openapi.json"),
])
def test_every_api_mount_answers_unknown_paths_and_methods_with_the_json_404(method, path):
    h = Harness()
    r = h.request(method, path)
    assert r.code == 404 and json_error(r) == {
        "code": "not_found", "message": "No such API resource or method.", "field": None}
    h.finish()


def test_an_unexpected_error_in_the_api_is_a_json_500_without_its_text(logged):
    h = Harness()
    h.service.request_callback = lambda req: defer.fail(RuntimeError("dsn=secret-host"))
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
    assert r.code == 500
    assert json_error(r)["code"] == "internal_error"
    assert b"secret-host" not in r.body and b"RuntimeError" not in r.body
    assert any(e.get("log_failure") is not None and e["log_failure"].check(RuntimeError)
               for e in logged)
    h.finish()


def test_an_api_under_a_host_name_keeps_the_json_boundary():
    h = Harness(apps=[app_config(path="/a", hosts=(A_HOST,))])
    r = h.request("DELETE", "/api/v1/callbacks/cb-0001", headers={"Host": [A_HOST]})
    assert r.code == 404 and json_error(r)["code"] == "not_found"
    h.finish()


def test_a_failure_no_page_handler_answered_is_a_plain_html_500(logged):
    h = Harness()

    def boom(request):
        raise RuntimeError("token=do-not-show")

    h.web.csrf.ensure_cookie = boom
    r = h.get("/web-callback")
    assert r.code == 500
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert r.header("x-frame-options") == "DENY"
    assert "do-not-show" not in r.text and "Traceback" not in r.text
    request_id = r.header("x-request-id")
    assert request_id and request_id in r.text
    assert any(e.get("request_id") == request_id and e["log_failure"].check(RuntimeError)
               for e in logged)
    # Outside /api the pages keep HTML errors: an unknown page is not a JSON answer.
    assert h.get("/web-callback/nothing").header("content-type") != "application/json"
    h.finish()


def lines(events, prefix: str) -> list[dict]:
    return [e for e in events if e.get("log_format", "").startswith(prefix)]


def test_callback_log_lines_carry_the_callback_id_and_the_client(logged):
    h = Harness()
    body = {"mode": "hosted", "phone": "15550100"}
    cb_id = h.post_json("/api/v1/callbacks", body).json()["id"]
    [accepted] = lines(logged, "callback requested")
    assert accepted["callback_id"] == cb_id and accepted["client"] == "127.0.0.1"
    # Refused once the id was drawn (the service said no): the line names that id.
    h.service.request_callback = lambda req: defer.fail(CallbackRefused("no_balance", "no"))
    h.post_json("/api/v1/callbacks", body)
    # Refused before any id exists (bad input): the field is there, as "-".
    h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "1"})
    late, early = lines(logged, "callback refused")
    assert late["code"] == "no_balance" and late["callback_id"] not in ("-", cb_id)
    assert late["callback_id"].startswith("cb-") and late["client"] == "127.0.0.1"
    assert early["code"] == "invalid_input" and early["callback_id"] == "-"
    h.finish()
