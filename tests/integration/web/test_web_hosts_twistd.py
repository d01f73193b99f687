"""Host-name routing and the /metrics allow-list on the real ``twistd cbserver``, over HTTPS.

The server runs from the shipped example configuration with a second ``[[application]]``
that lists ``hosts``; every request is a real one on a socket, with the ``Host`` header a
browser would send for that name.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request

import pytest

from tests.support.server import start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

HOST = "cb.example.net"
SECOND = """hosted_allowed_clients = ["127.0.0.0/8"]

[[application]]
name = "Example Telecom callback"
callback_page_address = "https://cb.example.net/"
hosts = ["cb.example.net"]
"""


def fetch(url: str, host: str | None = None, body: dict | None = None) -> tuple[int, str]:
    """(status, body text) of one HTTPS request, certificate unchecked, ``Host`` as given."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Host": host} if host else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def title(page: str) -> str:
    m = re.search(r"<title>([^<]*)</title>", page)
    return m.group(1) if m else ""


def test_host_header_picks_the_instance_and_metrics_answer_loopback(tmp_path, pg_dsn):
    config, port = write_config(tmp_path, pg_dsn, **{'hosted_allowed_clients = ["127.0.0.0/8"]\n':
                                                     SECOND})
    proc = start(config)
    try:
        wait_health(port, 200, proc)
        base = f"https://127.0.0.1:{port}"
        # The host name chooses the second instance at the root, with root-relative links.
        code, page = fetch(base + "/", host=f"CB.Example.net:{port}")
        assert code == 200 and title(page).endswith("Example Telecom callback")
        assert 'action="/"' in page
        code, page = fetch(base + "/status/0123456789abcdef", host=HOST)
        assert code == 404 and title(page).endswith("Example Telecom callback")
        # Its JSON API needs no "application": the host named the instance.
        code, text = fetch(base + "/api/v1/callbacks", host=HOST, body={"mode": "extended"})
        assert code == 400 and json.loads(text)["error"]["field"] == "account"
        # Any other host is routed by path, as without hosts.
        code, text = fetch(base + "/api/v1/callbacks", body={"mode": "extended"})
        assert code == 400 and json.loads(text)["error"]["field"] == "application"
        code, page = fetch(base + "/")  # the manual's address: the default (first) instance
        assert code == 200 and re.search(r"·\s*Web callback$", title(page))
        code, page = fetch(base + "/web-callback", host=HOST)
        assert code == 200 and re.search(r"·\s*Web callback$", title(page))
        # /metrics: open to loopback (the default allow-list).
        code, text = fetch(base + "/metrics")
        assert code == 200 and "cbserver_active_callbacks" in text
    finally:
        code, out = terminate(proc)
    assert code == 0, out
    assert "Traceback" not in out
