"""The real ``twistd cbserver`` with its operator's console, and a small HTTPS client for it.

``ConsoleServer`` starts the server from the shipped example configuration on free loopback
ports, with operators made by the real CLI (``cbserver operator add --password-stdin``).
``Client`` keeps its own cookies (so a test can plant, copy or forge one) and never follows
redirects (so a test sees each 303 and its ``Location``).
"""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

from tests.support.server import free_port, start, terminate, wait_health, write_config

CLI = str(Path(sys.executable).parent / "cbserver")
ADMIN_PASSWORD = "Adm1n-console-pw"
READER_PASSWORD = "Read0nly-console-pw"


def add_operator(config: Path, name: str, role: str, password: str) -> subprocess.CompletedProcess:
    """``cbserver operator add NAME --role ROLE --password-stdin --config FILE``."""
    return subprocess.run([CLI, "operator", "add", name, "--role", role, "--password-stdin",
                           "--config", str(config)], input=password + "\n", text=True,
                          capture_output=True, timeout=60)


class ConsoleServer:
    """``twistd cbserver`` with an admin endpoint on a free port and two operators."""

    def __init__(self, folder: Path, dsn: str, tls: bool = True, replace: dict | None = None,
                 **settings: str):
        self.admin_port = free_port()
        self.dsn = dsn
        scheme = "ssl" if tls else "tcp"  # tcp: cookies without Secure and the __Host- prefix
        # The example's own lines of these settings are replaced (e.g. console_idle_timeout = 900).
        defaults = {"console_idle_timeout": "900", "console_login_attempts": "5",
                    "console_lockout": "900"}
        self.config, self.web_port = write_config(folder, dsn, **{
            'admin_endpoint = "ssl:8902:interface=127.0.0.1"':
                f'admin_endpoint = "{scheme}:{self.admin_port}:interface=127.0.0.1"',
            **{f"{k} = {defaults[k]}": f"{k} = {v}" for k, v in settings.items()},
            **(replace or {}),  # other lines of the example: old text -> new text
        })
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.admin_port}"
        for name, role, pw in (("alice", "admin", ADMIN_PASSWORD),
                               ("rita", "readonly", READER_PASSWORD)):
            done = add_operator(self.config, name, role, pw)
            assert done.returncode == 0, done.stderr
        self.proc = start(self.config)
        wait_health(self.web_port, 200, self.proc, timeout=60.0)

    def stop(self) -> str:
        """Stop the server; its output."""
        return terminate(self.proc)


class Reply:
    """One answer: status, headers, body text."""

    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body
        self.text = body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """A header's value (the first)."""
        return self.headers.get(name)

    def set_cookies(self) -> dict[str, str]:
        """``name -> full Set-Cookie line`` of this answer."""
        out = {}
        for line in self.headers.get_all("Set-Cookie") or []:
            out[line.split("=", 1)[0]] = line
        return out

    def csrf(self) -> str:
        """The ``csrf`` hidden field of the (first) form on the page."""
        m = re.search(r'name="csrf" value="([^"]*)"', self.text)
        assert m, self.text[:500]
        return m.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every redirect back to the caller."""

    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    """An HTTPS client with its own cookie table (no redirects followed, certificate unchecked)."""

    def __init__(self, base: str):
        self.base = base
        self.cookies: dict[str, str] = {}
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                                  _NoRedirect())

    def request(self, method: str, path: str, fields: dict | None = None,
                headers: dict | None = None) -> Reply:
        """One request; cookies sent from and stored into ``self.cookies``."""
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        h = dict(headers or {})
        if data is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                reply = Reply(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            reply = Reply(e.code, e.headers, e.read())
        for line in reply.headers.get_all("Set-Cookie") or []:
            c = SimpleCookie()
            c.load(line)
            for k, morsel in c.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = morsel.value
        return reply

    def get(self, path: str, **kw) -> Reply:
        """GET ``path``."""
        return self.request("GET", path, **kw)

    def post(self, path: str, fields: dict, **kw) -> Reply:
        """POST a url-encoded form."""
        return self.request("POST", path, fields, **kw)

    def login(self, name: str, password: str) -> Reply:
        """The login form, then its POST."""
        form = self.get("/ui/login")
        return self.post("/ui/login", {"csrf": form.csrf(), "name": name, "password": password})


def stop(server: ConsoleServer | None) -> None:
    """Stop a server if it started; its log goes to stdout (pytest shows it on a failure)."""
    if server is not None:
        print(server.stop())
