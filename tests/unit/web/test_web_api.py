"""The JSON API: every mode, every error code, instance selection, the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from cbserver.callback.api import REFUSAL_HTTP_STATUS, CallbackRefused
from cbserver.config import LimitsConfig
from tests.support.metrics import sample
from tests.unit.web.harness import TOKEN, Harness, app_config

EXTENDED = {"mode": "extended", "account": "cb1001", "password": "right-pw", "phone": "+1 555 0100",
            "destination": "442079460000"}


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.finish()


def error(reply) -> dict:
    assert reply.header("content-type") == "application/json"
    return reply.json()["error"]


@pytest.mark.parametrize("body", [
    EXTENDED,
    {"mode": "simple", "account": "cb1001", "phone": "15550100"},
    {"mode": "hosted", "phone": "15550100"},
])
def test_post_answers_202_with_id_and_status_for_each_mode(h, body):
    r = h.post_json("/api/v1/callbacks", body)
    assert r.code == 202
    assert r.json() == {"id": "cb-0001", "status": "calling_you"}
    assert r.header("location") == "/api/v1/callbacks/cb-0001"
    assert h.service.requests[0].mode == body["mode"]
    assert sample(h.metrics, "cbserver_callback_requests_total", mode=body["mode"]) == 1


def test_get_returns_the_status_dict_of_the_service(h):
    cb_id = h.post_json("/api/v1/callbacks", EXTENDED).json()["id"]
    h.clock.pump([1] * 7)
    r = h.get(f"/api/v1/callbacks/{cb_id}")
    assert r.code == 200
    assert r.json() == h.service.statuses[cb_id]
    assert r.json()["status"] == "ended" and r.json()["charges"]["total"] == "0.12"
    assert r.header("cache-control") == "no-store"


def test_unknown_id_is_404_not_found(h):
    r = h.get("/api/v1/callbacks/cb-9999")
    assert r.code == 404 and error(r)["code"] == "not_found"
    assert h.get("/api/v1/callbacks/%20x%3C").code == 404


@pytest.mark.parametrize("kw,field", [
    ({"data": b'{"mode": "simple"}', "headers": {"Content-Type": ["text/plain"]}}, "body"),
    ({"data": b"{not json", "headers": {"Content-Type": ["application/json"]}}, "body"),
    ({"data": b"[1, 2]", "headers": {"Content-Type": ["application/json"]}}, "body"),
    ({"data": b'{"mode": "x"' + b" " * 17000 + b"}", "headers": {"Content-Type": ["application/json"]}},
     "body"),
])
def test_malformed_bodies_are_400_invalid_input(h, kw, field):
    r = h.request("POST", "/api/v1/callbacks", **kw)
    assert r.code == 400
    assert error(r)["code"] == "invalid_input" and error(r)["field"] == field
    assert h.service.requests == []


def test_missing_and_bad_fields_are_listed(h):
    r = h.post_json("/api/v1/callbacks", {"mode": "extended", "account": 12, "phone": "1"})
    assert r.code == 400
    err = error(r)
    assert err["code"] == "invalid_input"
    assert set(err["fields"]) == {"account", "password", "phone", "destination"}
    assert err["field"] == "account"


def test_unknown_mode_is_400_on_the_mode_field(h):
    r = h.post_json("/api/v1/callbacks", {"mode": "teleport", "phone": "15550100"})
    assert r.code == 400 and error(r)["field"] == "mode"


@pytest.mark.parametrize("body,status,code", [
    ({**EXTENDED, "password": "nope"}, 401, "bad_credentials"),
    ({**EXTENDED, "account": "cb1002", "password": "pw2"}, 402, "no_balance"),
    ({**EXTENDED, "account": "cb1003", "password": "pw3"}, 403, "inactive_account"),
])
def test_service_refusals_keep_their_code(h, body, status, code):
    r = h.post_json("/api/v1/callbacks", body)
    assert r.code == status and error(r)["code"] == code
    assert sample(h.metrics, "cbserver_callback_refusals_total", mode="extended", code=code) == 1


def test_hosted_from_an_unlisted_client_is_403_unless_the_token_header_is_sent():
    h = Harness(apps=[app_config(hosted_allowed_clients=("10.0.0.0/8", f"token:{TOKEN}"))])
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
    assert r.code == 403 and error(r)["code"] == "hosted_not_allowed"
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"},
                    headers={"X-Callback-Token": [TOKEN]})
    assert r.code == 202
    h.finish()


def test_rate_limited_is_429_with_retry_after():
    h = Harness(limits=LimitsConfig(per_client=2, window=600))
    for _ in range(2):
        assert h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"}).code == 202
    h.clock.advance(100)
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
    assert r.code == 429 and error(r)["code"] == "rate_limited"
    # sliding window: 500 s to the next window, then 400 s until 3 hits weigh less than 1 more
    assert r.header("retry-after") == "900"
    assert sample(h.metrics, "cbserver_rate_limit_refusals_total", kind="client") == 1
    h.finish()


def test_not_ready_is_503_from_the_web_check_and_from_the_service(h):
    h.ready = False
    r = h.post_json("/api/v1/callbacks", EXTENDED)
    assert r.code == 503 and error(r)["code"] == "not_ready" and h.service.requests == []
    h.ready = True
    h.service.ready = False
    r = h.post_json("/api/v1/callbacks", EXTENDED)
    assert r.code == 503 and error(r)["code"] == "not_ready"


def test_status_is_still_served_while_draining_and_503_when_the_database_fails(h):
    from cbserver.errors import DatabaseUnavailable

    cb_id = h.post_json("/api/v1/callbacks", EXTENDED).json()["id"]
    h.ready = False  # draining: no new callbacks...
    assert h.get(f"/api/v1/callbacks/{cb_id}").code == 200  # ...but progress is still shown
    h.service.get_status = lambda cid: defer.fail(DatabaseUnavailable("connection lost"))
    r = h.get(f"/api/v1/callbacks/{cb_id}")
    assert r.code == 503 and error(r)["code"] == "not_ready" and r.header("retry-after") == "5"
    assert h.get(f"/web-callback/status/{cb_id}").code == 503


def test_unexpected_service_error_is_500_and_logged(h):
    h.service.request_callback = lambda req: defer.fail(RuntimeError("boom"))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        r = h.post_json("/api/v1/callbacks", EXTENDED)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert r.code == 500 and error(r)["code"] == "internal_error"
    assert "boom" not in r.text
    assert any(e.get("log_failure") is not None for e in events)
    assert "right-pw" not in repr(events)


def test_several_instances_need_the_application_field_on_the_shared_path():
    h = Harness(apps=[app_config("Brazil", path="/br"), app_config("Office", path="/office")],
                limits=LimitsConfig(concurrent_per_account=10))
    r = h.post_json("/api/v1/callbacks", EXTENDED)
    assert r.code == 400 and error(r)["field"] == "application"
    r = h.post_json("/api/v1/callbacks", {**EXTENDED, "application": "Office"})
    assert r.code == 202 and h.service.requests[-1].application == "Office"
    r = h.post_json("/api/v1/callbacks", {**EXTENDED, "application": "/br"})
    assert r.code == 202 and h.service.requests[-1].application == "Brazil"
    r = h.post_json("/br/api/v1/callbacks", EXTENDED)
    assert r.code == 202 and h.service.requests[-1].application == "Brazil"
    cb_id = r.json()["id"]
    assert h.get(f"/br/api/v1/callbacks/{cb_id}").code == 200
    assert h.get(f"/office/api/v1/callbacks/{cb_id}").code == 404
    assert h.get(f"/api/v1/callbacks/{cb_id}").code == 200
    h.finish()


def test_openapi_document_is_served_and_valid(h):
    r = h.get("/api/v1/openapi.json")
    assert r.code == 200 and r.header("content-type") == "application/json"
    doc = r.json()
    validate(doc)
    assert doc == json.loads((Path(__file__).parents[3] / "cbserver/web/openapi.json").read_text())
    codes = set(doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert set(REFUSAL_HTTP_STATUS) <= codes
    post = doc["paths"]["/api/v1/callbacks"]["post"]["responses"]
    assert {str(s) for s in REFUSAL_HTTP_STATUS.values()} - {"404"} <= set(post)
    assert "404" in doc["paths"]["/api/v1/callbacks/{id}"]["get"]["responses"]


def test_documented_example_bodies_are_accepted(h):
    doc = h.get("/api/v1/openapi.json").json()
    examples = doc["paths"]["/api/v1/callbacks"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]
    for name, ex in examples.items():
        body = dict(ex["value"])
        if body.get("account") == "cb1001" and "password" in body:
            body["password"] = "right-pw"
        r = h.post_json("/api/v1/callbacks", body)
        assert r.code == 202, (name, r.body)


def test_every_refusal_code_maps_to_its_documented_status():
    h = Harness(limits=LimitsConfig(per_phone=100))
    for code, status in REFUSAL_HTTP_STATUS.items():
        h.service.request_callback = (lambda c: lambda req: defer.fail(CallbackRefused(c, "no")))(code)
        r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
        assert r.code == status and error(r)["code"] == code
        if status == 429:
            assert r.header("retry-after") == "30"
    h.finish()


@pytest.mark.parametrize("method,path", [("GET", "/api/v1/nothing"), ("GET", "/api/v1/callbacks"),
                                         ("DELETE", "/api/v1/callbacks/cb-0001")])
def test_unknown_api_resources_and_methods_answer_json_404(h, method, path):
    r = h.request(method, path)
    assert r.code == 404 and error(r)["code"] == "not_found"


def test_a_node_at_its_active_cap_refuses_busy_before_any_database_work():
    h = Harness(limits=LimitsConfig(node_max_active=1, concurrent_per_account=10))
    body = {"mode": "simple", "account": "cb1001", "phone": "15550100"}
    assert h.post_json("/api/v1/callbacks", body).code == 202
    hits = dict(h.store.counters)
    r = h.post_json("/api/v1/callbacks", body)
    assert r.code == 503 and error(r)["code"] == "busy" and r.header("retry-after") == "2"
    assert h.store.counters == hits  # refused before the rate limits were even counted
    assert 'code="busy"' in h.get("/metrics").text
    for _ in range(10):  # the first callback runs its course and ends
        h.clock.advance(5)
    assert h.service.active == 0
    assert h.post_json("/api/v1/callbacks", body).code == 202
    h.finish()


def test_requests_beyond_node_max_starting_are_refused_busy_and_the_count_recovers():
    h = Harness(limits=LimitsConfig(node_max_starting=2, concurrent_per_account=10))
    pending = []

    def slow(req):  # a service whose answers wait, like a busy database
        pending.append(defer.Deferred())
        return pending[-1].addCallback(lambda _: req.callback_id)

    h.service.request_callback = slow
    gateway, app_cfg = h.web.gateway, h.config.application[0]
    body = {"mode": "simple", "account": "cb1001", "phone": "15550100"}
    outcomes = []

    def start():
        d = gateway.start(app_cfg, "simple", dict(body), "192.0.2.7", None, False)
        d.addCallbacks(lambda cb_id: outcomes.append("ok"),
                       lambda f: outcomes.append(f.trap(CallbackRefused) and f.value.code))

    for _ in range(3):
        start()
    assert outcomes == ["busy"] and gateway.starting == 2
    for d in pending:
        d.callback(None)
    assert outcomes == ["busy", "ok", "ok"] and gateway.starting == 0
    start()
    assert gateway.starting == 1
    pending[-1].errback(CallbackRefused("no_balance", "no"))
    assert outcomes[-1] == "no_balance" and gateway.starting == 0
    h.finish()
