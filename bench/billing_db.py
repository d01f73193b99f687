"""A scratch billing database for the benchmarks that bill through PostgreSQL.

``scratch_billing_db(tag, accounts)`` creates a database on the checkout's local cluster
(started if needed), migrates it, provisions one tariff (prefixes 1 and 44), a product, a
customer and ``accounts`` debit accounts ``bench00000…`` with a balance of 1,000,000 USD
through ``cbserver provision``, and drops it again on the way out.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cbserver.billing.provision import provision_file_sync
from cbserver.db.migrations import upgrade
from cbserver.devtools.pgcluster import default_cluster, find_pg_bin

CATALOG = """
[[destination]]
prefix = "1"
[[destination]]
prefix = "44"
[[tariff]]
name = "Bench"
currency = "USD"
  [[tariff.rate]]
  prefix = "1"
  first_interval = 60
  next_interval = 6
  first_price = "0.10"
  next_price = "0.05"
  effective_from = 2020-01-01T00:00:00Z
  [[tariff.rate]]
  prefix = "44"
  first_interval = 1
  next_interval = 1
  first_price = "0.60"
  next_price = "0.60"
  effective_from = 2020-01-01T00:00:00Z
[[product]]
name = "Bench"
currency = "USD"
services = ["voice"]
  [[product.rating_list]]
  service = "voice"
  node = "node1"
  access_code = "WEBCALLBACK"
  tariff = "Bench"
[[customer]]
name = "Bench"
balance_control = "prepaid"
currency = "USD"
"""

ACCOUNT = """
[[account]]
id = "{id}"
customer = "Bench"
product = "Bench"
account_type = "debit"
opening_balance = "1000000"
status = "active"
"""


def account_id(i: int) -> str:
    """The id of bench account number ``i``."""
    return f"bench{i:05d}"


@contextmanager
def scratch_billing_db(tag: str, accounts: int) -> Iterator[tuple[str, str]]:
    """Yield ``(dsn, scratch folder)`` of a provisioned database; drop both afterwards."""
    cluster = default_cluster()
    cluster.start()
    name = f"cbs_bench_{tag}_{os.getpid()}"
    bin_ = find_pg_bin()
    where = ["-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", "cbserver"]
    subprocess.run([str(bin_ / "createdb"), *where, name], check=True)
    dsn = cluster.dsn(name)
    try:
        upgrade(dsn, report=lambda _line: None)
        with tempfile.TemporaryDirectory() as tmp:
            doc = Path(tmp) / "bench.toml"
            doc.write_text(CATALOG + "".join(ACCOUNT.format(id=account_id(i)) for i in range(accounts)))
            provision_file_sync(dsn, doc, csv_dir=tmp)
            yield dsn, tmp
    finally:
        subprocess.run([str(bin_ / "dropdb"), *where, "--force", name], check=False)
