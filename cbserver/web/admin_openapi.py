"""The OpenAPI 3 document of the admin API, built from the service layer's field tables.

Built from the same ``Field`` tables the services validate with, so the document cannot drift
from what the API accepts; ``cbserver/web/openapi_admin.json`` is a copy of it for readers
(a test checks that the copy is current).
"""

from __future__ import annotations

import functools

from cbserver.billing.accounts import ACCOUNT, BATCH, CUSTOMER
from cbserver.billing.catalog import DESTINATION, PRODUCT, RATE, RATING_ENTRY, TARIFF
from cbserver.billing.generator import GENERATOR
from cbserver.billing.payments import PAYMENT
from cbserver.web import admin_applications, admin_audit
from cbserver.web.admin_calls_openapi import calls_paths, calls_schemas

_DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
            "description": "exact decimal, written as a string (a JSON integer is accepted too)"}
_DATETIME = {"type": "string", "format": "date-time",
             "description": "ISO 8601 with a time zone offset; naive times are refused"}
# A CSV file as the body of an import (the columns of ``cbserver rates import`` and
# ``cbserver destinations import``; problems come back per line as with JSON).
_CSV = {"text/csv": {"schema": {"type": "string", "description": "a CSV file with a header row"}}}
_REF = {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "a name or an id"}

_BOOLEANS = {"split_at_boundary", "overdraft_protection", "ecommerce", "internal", "new_batch",
             "manual_activation"}
_INTEGERS = {"first_interval", "next_interval", "offpeak_first_interval", "offpeak_next_interval",
             "avail_after_first_use_days", "avail_after_last_use_days", "quantity", "length"}
_DECIMALS = {"first_price", "next_price", "offpeak_first_price", "offpeak_next_price", "credit_limit",
             "opening_balance", "amount"}
_DATETIMES = {"effective_from", "activation_date", "expiration_date"}
_REFS = {"customer", "product", "batch", "tariff"}
_ENUMS = {
    "service": ["voice"], "applied_to": ["customer", "vendor"], "managed_by": ["administrator"],
    "rating_mode": ["flat", "peak_offpeak"], "product_type": ["main"], "account_role": ["universal"],
    "role": ["universal"], "balance_control": None, "business_model": ["universal"],
    "billing_period": ["daily", "weekly", "semimonthly", "monthly"], "account_type": ["debit", "credit"],
    "status": ["active", "inactive"], "method": ["random"], "service_password": ["auto", "none"],
    "web_credentials": ["auto", "empty"], "kind": ["payment", "refund"],
}


def _field_schema(name: str, kind: str) -> dict:
    if name in _BOOLEANS:
        return {"type": "boolean"}
    if name in _INTEGERS:
        return {"type": "integer", "minimum": 1}
    if name in _DECIMALS:
        return dict(_DECIMAL)
    if name in _DATETIMES:
        return dict(_DATETIME)
    if name in _REFS:
        return dict(_REF)
    if name == "balance_control":
        values = ["prepaid", "postpaid"] if kind == "Customer" else ["individual", "subordinate"]
        return {"type": "string", "enum": values}
    if _ENUMS.get(name):
        return {"type": "string", "enum": _ENUMS[name]}
    if name == "services":
        return {"type": "array", "items": {"type": "string", "enum": ["voice"]}, "minItems": 1}
    if name == "offpeak_periods":
        return {"type": "array", "items": {"type": "string", "example": "mon-fri 18:00-23:59"}}
    if name == "notify":
        return {"type": "array", "items": {"type": "string", "format": "email"},
                "description": "mail the batch's CSV to these addresses ([notifications] smtp)"}
    if name == "rating_list":
        return {"type": "array", "items": {"$ref": "#/components/schemas/RatingEntry"}}
    if name == "currency" and kind == "PaymentRequest":
        return {"type": "string", "pattern": "^[A-Z]{3}$",
                "description": "optional; refused unless it is the balance's currency"}
    if name == "currency":
        return {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217; fixed once set"}
    return {"type": "string"}


def _schema(kind: str, fields: dict) -> dict:
    props = {}
    for name, spec in fields.items():
        prop = _field_schema(name, kind)
        if not spec.mutable:
            prop["description"] = (prop.get("description", "") + " (cannot be changed)").strip()
        props[name] = prop
    required = [n for n, f in fields.items() if f.required]
    return {"type": "object", "additionalProperties": False, "properties": props,
            **({"required": required} if required else {})}


_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _json(ref: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _page(ref: str) -> dict:
    return {"description": "a page", "content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
            "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}}}}}}


def _crud(path: str, key: str, ref: str, filters: list[str], *, update: bool = True) -> dict:
    params = [{"name": n, "in": "query", "schema": {"type": "string"}} for n in ["limit", "offset", *filters]]
    errors = {"400": _ERROR, "401": _ERROR, "409": _ERROR}
    item = {
        "get": {"summary": f"one {ref}", "responses": {"200": {"description": ref, **_json(ref)},
                                                        "401": _ERROR, "404": _ERROR}},
        "delete": {"summary": f"delete a {ref} nothing depends on",
                   "responses": {"204": {"description": "deleted"}, "401": _ERROR, "404": _ERROR,
                                 "409": _ERROR}},
        "parameters": [{"name": key, "in": "path", "required": True, "schema": {"type": "string"}}],
    }
    if update:
        item["patch"] = {"summary": f"change a {ref}", "requestBody": {"required": True, **_json(ref)},
                         "responses": {"200": {"description": ref, **_json(ref)}, "404": _ERROR, **errors}}
    return {
        path: {
            "get": {"summary": f"list {ref}s", "parameters": params, "responses": {"200": _page(ref),
                                                                                   "400": _ERROR,
                                                                                   "401": _ERROR}},
            "post": {"summary": f"create a {ref}", "requestBody": {"required": True, **_json(ref)},
                     "responses": {"201": {"description": "created", **_json(ref)}, **errors}},
        },
        f"{path}/{{{key}}}": item,
    }


@functools.cache
def openapi_document() -> dict:
    """The OpenAPI 3.0 document (a fresh copy is not needed: callers must not mutate it)."""
    paths: dict = {}
    paths.update(_crud("/v1/destinations", "prefix", "Destination", ["prefix", "country"]))
    paths.update(_crud("/v1/tariffs", "key", "Tariff", ["name", "currency"]))
    paths.update(_crud("/v1/products", "key", "Product", ["name", "currency"]))
    paths.update(_crud("/v1/customers", "key", "Customer", ["name", "currency"]))
    paths.update(_crud("/v1/batches", "key", "Batch", ["name", "customer_id"], update=False))
    paths.update(_crud("/v1/accounts", "account_id", "Account",
                       ["customer", "product", "batch", "status", "account_type", "internal", "id_prefix"]))
    rates = _crud("/v1/rates", "rate_id", "Rate", ["tariff", "prefix"])
    paths["/v1/rates"] = {"get": rates["/v1/rates"]["get"]}
    paths["/v1/rates/{rate_id}"] = rates["/v1/rates/{rate_id}"]
    key = [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}]
    paths["/v1/tariffs/{key}/rates"] = {
        "parameters": key,
        "get": {"summary": "list a tariff's rates", "responses": {"200": _page("Rate"), "404": _ERROR}},
        "post": {"summary": "add a rate (its prefix must be in the destination register)",
                 "requestBody": {"required": True, **_json("Rate")},
                 "responses": {"201": {"description": "created", **_json("Rate")}, "400": _ERROR,
                               "409": _ERROR}}}
    paths["/v1/tariffs/{key}/rates/import"] = {
        "parameters": key,
        "post": {"summary": "insert or replace many rates, all or none",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"rates": {"type": "array", "items": {
                         "$ref": "#/components/schemas/Rate"}}}}}, **_CSV}},
                 "responses": {"200": {"description": "counts of created, updated, unchanged"},
                               "400": _ERROR}}}
    paths["/v1/destinations/import"] = {
        "post": {"summary": "add or change many destinations, all or none",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"destinations": {"type": "array", "items": {
                         "$ref": "#/components/schemas/Destination"}}}}}, **_CSV}},
                 "responses": {"200": {"description": "counts of created, updated, unchanged"},
                               "400": _ERROR}}}
    for path, what in (("/v1/batches/{key}/activate", "every inactive account of the batch"),
                       ("/v1/accounts/{account_id}/activate", "the account")):
        name = "key" if "batches" in path else "account_id"
        paths[path] = {"parameters": [{"name": name, "in": "path", "required": True,
                                       "schema": {"type": "string"}}],
                       "post": {"summary": f"activate {what}",
                                "responses": {"200": {"description": "how many were activated"},
                                              "404": _ERROR}}}
    for path, name, owner in (("/v1/accounts/{account_id}/payments", "account_id",
                               "an individual account (a subordinate one: 409, pay its customer)"),
                              ("/v1/customers/{key}/payments", "key",
                               "a customer (prepaid: money its subordinate accounts spend)")):
        paths[path] = {
            "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": f"list the payments and refunds of {owner.split(' (')[0]}, newest first",
                    "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                   for n in ("limit", "offset")],
                    "responses": {"200": _page("Payment"), "400": _ERROR, "401": _ERROR, "404": _ERROR}},
            "post": {"summary": f"record a payment (recharge) or refund of {owner}",
                     "requestBody": {"required": True, **_json("PaymentRequest")},
                     "responses": {"201": {"description": "the payment; balance_after is the new balance",
                                           **_json("Payment")},
                                   "400": _ERROR, "401": _ERROR, "404": _ERROR, "409": _ERROR}}}
    paths["/v1/generator/jobs"] = {"post": {
        "summary": "check and start the account generator as a background job",
        "requestBody": {"required": True, **_json("GeneratorRequest")},
        "responses": {"202": {"description": "job started; poll its Location"}, "400": _ERROR,
                      "409": _ERROR}}}
    paths["/v1/generator/jobs/{job_id}"] = {
        "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {"summary": "a generator job: state running/done/failed, progress, result with csv_path",
                "responses": {"200": {"description": "the job"}, "404": _ERROR}}}
    paths["/v1/readiness"] = {"get": {
        "summary": "what in the catalog would refuse this node's callbacks (as `cbserver check`)",
        "responses": {"200": _json("Readiness"), "401": _ERROR}}}
    paths.update(admin_audit.openapi_paths(_ERROR, _page))
    paths.update(_crud("/v1/applications", "key", "Application", ["name"]))
    _node = [{"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}]
    paths["/v1/nodes"] = {"get": {
        "summary": "the cluster's nodes: live processes, callbacks in progress, drain state",
        "responses": {"200": {"description": "{items: [{node, draining, deadline, processes, "
                                             "instances, active_callbacks}]}"}, "401": _ERROR}}}
    paths["/v1/nodes/{node}/drain"] = {
        "parameters": _node,
        "post": {"summary": "drain a node: no new callbacks, /readyz 503, calls end by the deadline",
                 "requestBody": {"required": False, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"deadline": {
                         "type": "number", "nullable": True, "minimum": 0, "exclusiveMinimum": True,
                         "description": "seconds; calls still running then are ended (cause "
                                        "drain_deadline). null or absent: no deadline"}}}}}},
                 "responses": {"200": {"description": "{node, draining, deadline, requested_at}"},
                               "400": _ERROR, "401": _ERROR}},
        "delete": {"summary": "undrain a node: it takes callbacks again",
                   "responses": {"200": {"description": "{node, draining: false}"},
                                 "404": _ERROR, "401": _ERROR}}}
    paths.update(calls_paths())
    schemas = {
        **admin_audit.openapi_schemas(), **admin_applications.openapi_schemas(),
        **calls_schemas(),
        "Destination": _schema("Destination", DESTINATION), "Tariff": _schema("Tariff", TARIFF),
        "Rate": _schema("Rate", RATE), "RatingEntry": _schema("RatingEntry", RATING_ENTRY),
        "Product": _schema("Product", PRODUCT), "Customer": _schema("Customer", CUSTOMER),
        "Batch": _schema("Batch", BATCH), "Account": _schema("Account", ACCOUNT),
        "GeneratorRequest": _schema("GeneratorRequest", GENERATOR),
        "PaymentRequest": _schema("PaymentRequest", PAYMENT),
        "Payment": {"type": "object", "properties": {
            "id": {"type": "integer"}, "account_id": {"type": "string", "nullable": True},
            "customer_id": {"type": "integer", "nullable": True},
            "kind": {"type": "string", "enum": ["payment", "refund"]}, "amount": dict(_DECIMAL),
            "currency": {"type": "string"}, "balance_after": dict(_DECIMAL), "note": {"type": "string"},
            "made_by": {"type": "string"}, "created_at": dict(_DATETIME)}},
        "Readiness": {"type": "object", "properties": {
            "node": {"type": "string"}, "checked_at": dict(_DATETIME),
            "ready": {"type": "boolean", "description": "false when any finding is an error"},
            "findings": {"type": "array", "items": {"type": "object", "properties": {
                "severity": {"type": "string", "enum": ["error", "warning"]},
                "code": {"type": "string"}, "subject": {"type": "string"},
                "message": {"type": "string"}, "details": {"type": "object"}}}}}},
        "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "string", "enum": ["invalid", "unauthorized", "not_found", "conflict",
                                                "unavailable", "method_not_allowed",
                                                "internal_error", "busy"]},
            "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "cbserver admin API", "version": "1",
                 "description": "The billing catalog of cbserver: destinations, tariffs, rates, products, "
                                "customers, batches, accounts, payments and the account generator. Input "
                                "schemas list the fields accepted on create; on update (PATCH) every field "
                                "is optional. Responses add stored fields such as id and created_at."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": schemas},
        "paths": paths,
    }
