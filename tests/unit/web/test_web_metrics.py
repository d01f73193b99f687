"""/metrics: a private Prometheus registry with the service's counters, gauges and histograms."""

from __future__ import annotations

import dataclasses

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.config import LimitsConfig, WebConfig
from cbserver.web.app import WebApp
from cbserver.web.metrics import Metrics
from tests.unit.web.harness import Harness


def samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_session_hooks_show_up_in_the_exposition():
    depth = [3]
    m = Metrics(spool_depth=lambda: depth[0])
    m.callback_started("extended")
    m.callback_started("hosted")
    m.callback_ended("extended", "connected")
    m.leg_final("A", 200)
    m.leg_final("B", 486)
    m.leg_final("B", 486)
    m.post_dial_delay(0.8)
    m.post_dial_delay(4.0)
    m.ivr_failure("bad_pin")
    m.request_refused("simple", "rate_limited", "phone")
    depth[0] = 5
    s = samples(m.render().decode())
    assert s[("cbserver_callbacks_started_total", (("mode", "extended"),))] == 1
    assert s[("cbserver_callbacks_total", (("mode", "extended"), ("outcome", "connected")))] == 1
    assert s[("cbserver_active_callbacks", ())] == 1
    assert s[("cbserver_legs_total", (("leg", "B"), ("status", "486")))] == 2
    assert s[("cbserver_legs_total", (("leg", "A"), ("status", "200")))] == 1
    assert s[("cbserver_post_dial_delay_seconds_count", ())] == 2
    assert s[("cbserver_post_dial_delay_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("cbserver_ivr_failures_total", (("reason", "bad_pin"),))] == 1
    assert s[("cbserver_rate_limit_refusals_total", (("kind", "phone"),))] == 1
    assert s[("cbserver_callback_refusals_total", (("code", "rate_limited"), ("mode", "simple")))] == 1
    assert s[("cbserver_xdr_spool_depth", ())] == 5


def test_labelled_counters_looked_up_once_still_count_each_label_set_apart():
    m = Metrics()
    for outcome in ("connected", "busy_a", "connected"):
        m.callback_started("simple")
        m.callback_ended("simple", outcome)
    m.request_refused(None, "busy")
    m.request_refused("", "busy")
    m.request_refused("simple", "busy")
    s = samples(m.render().decode())
    assert s[("cbserver_callbacks_total", (("mode", "simple"), ("outcome", "connected")))] == 2
    assert s[("cbserver_callbacks_total", (("mode", "simple"), ("outcome", "busy_a")))] == 1
    assert s[("cbserver_callbacks_started_total", (("mode", "simple"),))] == 3
    assert s[("cbserver_active_callbacks", ())] == 0
    assert s[("cbserver_callback_refusals_total", (("code", "busy"), ("mode", "unknown")))] == 2
    assert s[("cbserver_callback_refusals_total", (("code", "busy"), ("mode", "simple")))] == 1


def test_registry_is_private_so_two_instances_do_not_clash():
    a, b = Metrics(), Metrics()
    a.callback_started("simple")
    assert samples(a.render().decode())[("cbserver_callbacks_started_total", (("mode", "simple"),))] == 1
    assert ("cbserver_callbacks_started_total", (("mode", "simple"),)) not in samples(b.render().decode())
    assert REGISTRY.get_sample_value("cbserver_active_callbacks") is None


def test_metrics_route_serves_the_text_format_with_web_counts():
    h = Harness(limits=LimitsConfig(per_phone=1))
    assert h.submit("simple", account="cb1001", phone="15550100").code == 303
    assert h.submit("simple", account="cb1001", phone="15550100").code == 429
    r = h.get("/metrics")
    assert r.code == 200 and r.header("content-type").startswith("text/plain; version=0.0.4")
    s = samples(r.text)
    assert s[("cbserver_callback_requests_total", (("mode", "simple"),))] == 1
    assert s[("cbserver_rate_limit_refusals_total", (("kind", "phone"),))] == 1
    assert s[("cbserver_xdr_spool_depth", ())] == 7
    h.finish()


class FakeDb:
    ready = True

    def health(self):
        return {"status": "ok"}

    def runQuery(self, sql, params=None):
        return defer.succeed([(1,)])


def test_other_paths_fall_through_to_the_health_app():
    clock = Clock()
    health = WebApp(FakeDb(), clock=clock)
    h = Harness(fallback=health.resource())
    r = h.get("/healthz")
    assert r.code == 200 and r.json()["status"] == "ok"
    assert h.get("/web-callback").code == 200
    assert h.get("/no/such/page").code == 404
    assert not clock.getDelayedCalls()
    h.finish()


def test_without_fallback_unknown_paths_are_404():
    h = Harness()
    assert h.get("/healthz").code == 404
    h.finish()


def test_an_instance_at_the_root_path_keeps_health_static_and_404():
    from tests.unit.web.harness import app_config

    h = Harness(apps=[app_config(path="/")], fallback=WebApp(FakeDb(), Clock()).resource())
    assert "Request a callback" in h.get("/").text
    loc = h.submit("simple", path="", account="cb1001", phone="15550100").header("location")
    assert loc == "/status/cb-0001" and h.get(loc).code == 200
    assert h.get("/healthz").code == 200 and h.get("/static/page.css").code == 200
    assert h.get("/nope").code == 404
    h.finish()


def _web(**kw) -> WebConfig:
    """The default [web] table with ``kw`` replaced."""
    return dataclasses.replace(WebConfig(), **kw)


def _count_renders(h: Harness) -> list:
    """Make ``h.metrics.render`` record its calls (a refused request must not collect)."""
    calls: list = []
    render = h.metrics.render
    h.metrics.render = lambda: calls.append(1) or render()
    return calls


def test_metrics_are_open_to_loopback_by_default():
    h = Harness()
    assert h.config.web.metrics_allowed_clients == ("127.0.0.0/8", "::1/128")
    assert h.get("/metrics").code == 200  # the stub's peer is 127.0.0.1
    h.finish()


def test_metrics_refused_403_outside_the_allowed_networks():
    h = Harness(web_config=_web(metrics_allowed_clients=("192.0.2.0/24",)))
    calls = _count_renders(h)
    r = h.get("/metrics")
    assert r.code == 403 and r.header("content-type").startswith("text/plain")
    assert r.text.startswith("Forbidden") and "cbserver_" not in r.text
    assert calls == []
    # X-Forwarded-For from a peer that is no trusted proxy changes nothing.
    assert h.get("/metrics", headers={"X-Forwarded-For": ["192.0.2.7"]}).code == 403
    h.finish()


def test_an_empty_metrics_allow_list_refuses_everyone():
    h = Harness(web_config=_web(metrics_allowed_clients=()))
    assert h.get("/metrics").code == 403
    h.finish()


def test_metrics_behind_a_trusted_proxy_judge_the_forwarded_client():
    h = Harness(web_config=_web(metrics_allowed_clients=("192.0.2.0/24",)),
                trusted_proxies=("127.0.0.1/32",))
    assert h.get("/metrics", headers={"X-Forwarded-For": ["192.0.2.7"]}).code == 200
    assert h.get("/metrics", headers={"X-Forwarded-For": ["198.51.100.1"]}).code == 403
    h.finish()
    # Loopback allowed, but the request only passed through a local proxy for an outsider.
    h = Harness(trusted_proxies=("127.0.0.1/32",))
    calls = _count_renders(h)
    assert h.get("/metrics", headers={"X-Forwarded-For": ["198.51.100.1"]}).code == 403
    assert calls == []
    assert h.get("/metrics").code == 200 and calls == [1]  # the proxy's own scrape
    h.finish()
