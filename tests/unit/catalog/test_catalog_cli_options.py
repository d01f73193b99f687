"""The CLI exposes every generator field as an option (no database)."""

from __future__ import annotations

from cbserver.billing.generator import GENERATOR
from cbserver.cli import build_parser
from cbserver.commands.accounts import generator_request


def test_every_generator_field_has_an_option():
    args = build_parser().parse_args([
        "accounts", "generate", "--customer", "Retail", "--product", "P", "--quantity", "10",
        "--batch", "b", "--existing-batch", "--role", "universal", "--type", "credit",
        "--balance-control", "subordinate", "--opening-balance", "0", "--credit-limit", "5",
        "--active", "--method", "random", "--prefix", "cb1818", "--length", "9",
        "--service-password", "none", "--distributor", "Kiosk", "--activation-date",
        "2026-01-01T00:00:00Z", "--expiration-date", "2027-01-01T00:00:00Z",
        "--avail-after-first-use", "90", "--avail-after-last-use", "30", "--ecommerce",
        "--web-credentials", "auto", "--time-zone", "UTC", "--language", "en",
        "--notify", "ops@example.net", "--notify", "boss@example.net", "--dsn", "x"])
    request = generator_request(args)
    assert set(request) == set(GENERATOR)
    assert request["notify"] == ["ops@example.net", "boss@example.net"]
    assert (request["new_batch"], request["manual_activation"], request["ecommerce"]) == (False, False, True)
    assert request["account_type"] == "credit" and request["avail_after_first_use_days"] == 90


def test_defaults_leave_the_service_defaults_alone():
    args = build_parser().parse_args([
        "accounts", "generate", "--customer", "Retail", "--product", "P", "--quantity", "10",
        "--batch", "b", "--length", "9", "--dsn", "x"])
    request = generator_request(args)
    assert request == {"customer": "Retail", "product": "P", "quantity": 10, "batch": "b", "length": 9,
                       "new_batch": True, "manual_activation": True, "ecommerce": False}
