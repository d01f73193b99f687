"""Drives ``CallbackWeb`` with treq's StubTreq, a shared ``task.Clock`` and in-memory fakes."""

from __future__ import annotations

import dataclasses
import html
import json
import re

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cbserver.callback.admission import ConcurrencyGauge, RateLimiter
from cbserver.config import ApplicationConfig, LimitsConfig, example_path, parse_config
from cbserver.web.callback_pages import CallbackWeb
from cbserver.web.metrics import Metrics
from tests.support.fake_callbacks import ScriptedCallbackService
from tests.unit.web.fakes import MemoryLimitStore

BASE = "https://cb.test"
TOKEN = "s3cret-hosted-token-0123"


def app_config(name="Web callback", **kw) -> ApplicationConfig:
    """One instance, Simple and Hosted enabled unless overridden."""
    fields = {"name": name, "callback_page_address": f"{BASE}/x", "second_number": "18005550100",
              "internal_account": "cb-internal", "hosted_allowed_clients": ("127.0.0.0/8",)}
    fields.update(kw)
    return ApplicationConfig(**fields)


@dataclasses.dataclass
class Reply:
    """A finished response: code, headers, body."""

    code: int
    headers: object
    body: bytes
    cookies: dict

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', self.text)
        assert m, "no CSRF token on the page"
        return m.group(1)


class Harness:
    """A CallbackWeb with a scripted service, memory limit store, metrics and a Clock."""

    def __init__(self, apps=None, limits=None, fallback=None, web_config=None, **web_kw):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.service = ScriptedCallbackService(self.clock)
        self.store = MemoryLimitStore(self.service.is_open, self.clock)  # the database's clock
        base = parse_config(example_path().read_text())
        self.config = dataclasses.replace(base, application=tuple(apps or (app_config(),)),
                                          limits=limits or LimitsConfig(),
                                          web=web_config or base.web)
        self.metrics = Metrics(spool_depth=lambda: 7)
        self.ready = True
        self.web = CallbackWeb(self.config, self.service,
                               RateLimiter(self.store, self.config.limits, self.clock),
                               ConcurrencyGauge(self.store, self.config.limits),
                               self.clock, self.metrics, ready=lambda: self.ready,
                               fallback=fallback, **web_kw)
        self.new_browser()

    def new_browser(self) -> None:
        """Forget every cookie (a fresh cookie jar, as a new browser has)."""
        self.stub = StubTreq(self.web.resource())

    def _sync(self, d):
        out = []
        d.addBoth(out.append)
        self.stub.flush()
        assert out, "request did not finish"
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]

    def request(self, method: str, path: str, **kw) -> Reply:
        """One request; the stub's cookie jar keeps the cookies the server sets."""
        kw.setdefault("allow_redirects", False)
        resp = self._sync(self.stub.request(method, BASE + path, **kw))
        body = self._sync(treq.content(resp))
        return Reply(resp.code, resp.headers, body, {c.name: c.value for c in resp.cookies()})

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post_form(self, path: str, fields: dict, **kw) -> Reply:
        return self.request("POST", path, data=fields, **kw)

    def post_json(self, path: str, body, **kw) -> Reply:
        headers = {"Content-Type": ["application/json"], **kw.pop("headers", {})}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, data=raw, headers=headers, **kw)

    def page_and_token(self, path="/web-callback", mode=None) -> tuple[Reply, str]:
        page = self.get(path + (f"?mode={mode}" if mode else ""))
        return page, page.csrf()

    def submit(self, mode: str, path="/web-callback", **fields) -> Reply:
        """Open the page in ``mode`` and post its form with ``fields``."""
        _, token = self.page_and_token(path, mode)
        return self.post_form(path, {"csrf": token, "mode": mode, **fields})

    def finish(self) -> None:
        """End every scripted callback and check that no timer is left."""
        self.service.stop()
        assert not self.clock.getDelayedCalls()


def visible_text(page: str) -> str:
    """The page without tags, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
