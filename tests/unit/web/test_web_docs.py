"""docs/web.md's examples work: the request body is accepted, the status matches the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from tests.support.fake_callbacks import ACCOUNTS
from tests.unit.web.harness import Harness

DOCS = Path(__file__).parents[3] / "docs" / "web.md"
OPENAPI = Path(__file__).parents[3] / "cbserver" / "web" / "openapi.json"


def json_blocks() -> list:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)]


def schema(name: str) -> dict:
    doc = json.loads(OPENAPI.read_text())
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def test_the_documented_request_body_starts_a_callback():
    body, _status = json_blocks()
    accounts = {**ACCOUNTS, body["account"]: {"password": body["password"], "balance": "5.00",
                                              "active": True}}
    h = Harness()
    h.service.accounts = accounts
    jsonschema.validate(body, schema("CallbackRequest"))
    r = h.post_json("/api/v1/callbacks", body)
    assert r.code == 202
    assert h.service.requests[0].phone == "551155550100"
    h.finish()


def test_the_documented_status_matches_the_schema_and_the_fake_service():
    _body, status = json_blocks()
    jsonschema.validate(status, schema("Status"))
    h = Harness()
    cb_id = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"}).json()["id"]
    h.clock.pump([1] * 7)
    served = h.get(f"/api/v1/callbacks/{cb_id}").json()
    jsonschema.validate(served, schema("Status"))
    assert set(served) == set(status)
    h.finish()


def test_every_error_code_in_the_docs_table_is_in_the_schema():
    codes = set(re.findall(r"^\| \d{3} \| `([a-z_]+)` \|", DOCS.read_text(), re.M))
    doc = json.loads(OPENAPI.read_text())
    enum = set(doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert codes == enum
