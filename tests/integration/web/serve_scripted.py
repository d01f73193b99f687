"""A real HTTPS server for the browser tests: ``CallbackWeb`` on the real reactor and PostgreSQL.

The callback service is the scripted fake (statuses advance on the reactor's clock), the rate
limiter and slots use the real PostgreSQL store, ``/healthz`` is the real ``WebApp``. Run as
``python -m tests.integration.web.serve_scripted DSN STATE_DIR``; it prints ``READY <port>``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from twisted.internet import endpoints, reactor
from twisted.web.server import Site

from cbserver.callback.admission import ConcurrencyGauge, RateLimiter
from cbserver.config import ApplicationConfig, LimitsConfig, example_path, parse_config
from cbserver.db.limits_store import PostgresLimitStore
from cbserver.db.pool import Database
from cbserver.web.app import WebApp
from cbserver.web.callback_pages import CallbackWeb
from cbserver.web.metrics import Metrics
from cbserver.web.tls import complete_endpoint
from tests.support.fake_callbacks import ScriptedCallbackService


def build(dsn: str, state: Path):
    """The site and the pool."""
    base = parse_config(example_path().read_text())
    app = ApplicationConfig(name="Example Telecom callback", callback_page_address="https://x/",
                            path="/cb", second_number="18005550100", internal_account="cb-internal",
                            hosted_allowed_clients=("127.0.0.0/8",))
    cfg = dataclasses.replace(base, application=(app,),
                              limits=LimitsConfig(per_client=100, per_phone=100, per_account=100,
                                                  concurrent_per_account=10))
    db = Database(dsn, reactor, size=2)
    store = PostgresLimitStore(db)
    service = ScriptedCallbackService(reactor, step=0.6, hold=2.5)
    web = CallbackWeb(cfg, service, RateLimiter(store, cfg.limits, reactor),
                      ConcurrencyGauge(store, cfg.limits), reactor, Metrics(),
                      ready=lambda: db.ready, fallback=WebApp(db, reactor).resource())
    site = Site(web.resource())
    site.displayTracebacks = False
    return site, db


def main() -> None:
    """Start the pool and listen on a free port over TLS."""
    dsn, state = sys.argv[1], Path(sys.argv[2])
    site, db = build(dsn, state)
    db.startService()
    ep = endpoints.serverFromString(reactor, complete_endpoint("ssl:0:interface=127.0.0.1", state))

    def listening(port):
        print(f"READY {port.getHost().port}", flush=True)

    def failed(f):
        print(f"FAILED {f.getErrorMessage()}", flush=True)
        reactor.stop()

    db.when_ready().addCallback(lambda _: ep.listen(site)).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
