"""The manual's whole example created with the CLI alone, then every stored field checked."""

from __future__ import annotations

import json

import pytest

from tests.integration.catalog.manual_example import check_stored, demo_doc, plain
from tests.integration.catalog.test_catalog_cli import cbs

pytestmark = pytest.mark.integration


def test_manual_example_by_cli(pg_dsn, tmp_path):
    doc = plain(demo_doc())
    dsn = ("--dsn", pg_dsn)
    for dest in doc["destination"]:
        cbs("catalog", "create", "destination", "--json", json.dumps(dest), *dsn)
    for tariff in doc["tariff"]:
        rates = tariff.pop("rate")
        cbs("catalog", "create", "tariff", "--json", json.dumps(tariff), *dsn)
        rate_file = tmp_path / f"{tariff['name']}.csv"
        columns = sorted({k for r in rates for k in r})
        rate_file.write_text(",".join(columns) + "\n" + "".join(
            ",".join(str(r.get(c, "")) for c in columns) + "\n" for r in rates))
        cbs("rates", "import", "--tariff", tariff["name"], str(rate_file), *dsn)
    for kind in ("product", "customer", "account"):
        for item in doc[kind]:
            cbs("catalog", "create", kind, "--json", json.dumps(item), *dsn)
    run = doc["generate"][0]
    out = cbs("accounts", "generate", "--customer", run["customer"], "--product", run["product"],
              "--quantity", str(run["quantity"]), "--batch", run["batch"], "--prefix", run["prefix"],
              "--length", str(run["length"]), "--opening-balance", run["opening_balance"],
              "--service-password", "auto", "--web-credentials", "auto", "--time-zone", run["time_zone"],
              "--language", run["language"], "--csv-dir", str(tmp_path / "cards"), *dsn)
    assert out.stdout.strip().endswith(".csv")
    check_stored(pg_dsn)
