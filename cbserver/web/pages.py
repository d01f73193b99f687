"""Server-rendered HTML of the callback page: the form with its three modes, and the status.

Everything is escaped here with ``html.escape``; the layout is ``templates/layout.html``. The
page works without JavaScript (tabs are links, the form posts, the status page refreshes
itself through ``<noscript><meta refresh>``); ``static/page.js`` enhances it in place.
"""

from __future__ import annotations

import functools
from html import escape
from pathlib import Path
from string import Template

from cbserver.callback.api import FINAL_STATUSES
from cbserver.web.api import FIELD_LABELS, MODE_FIELDS

TEMPLATES = Path(__file__).resolve().parent / "templates"
STEPS = (("calling_you", "Calling you"), ("answered", "Answered"),
         ("calling_destination", "Calling the destination"), ("connected", "Connected"),
         ("ended", "Ended"))
MODE_TITLES = {"extended": "Extended", "simple": "Simple", "hosted": "Hosted"}
BUTTONS = {"extended": "Connect Us Now!", "simple": "Call Me Now!", "hosted": "Call Me Now!"}
_INPUTS = {
    "account": 'type="text" autocomplete="username" autocapitalize="none" spellcheck="false"',
    "password": 'type="password" autocomplete="current-password"',
    "phone": 'type="tel" autocomplete="tel" inputmode="tel"',
    "destination": 'type="tel" autocomplete="off" inputmode="tel"',
}
STATUS_TEXT = {
    "calling_you": "Calling you now: please answer your phone.",
    "answered": "You answered. Please hold on.",
    "calling_destination": "Calling the destination…",
    "connected": "Connected: you are talking.",
    "ended": "The call has ended.",
    "refused": "The callback could not be made.",
}


@functools.lru_cache(maxsize=4)
def _template(name: str) -> Template:
    """A template from the package (read once)."""
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def layout(app_cfg, home: str, title: str, content: str, head_extra: str = "") -> bytes:
    """The whole page around ``content`` (already HTML)."""
    text = _template("layout.html").substitute(
        title=escape(f"{title} · {app_cfg.name}"), app_name=escape(app_cfg.name),
        home=escape(home), content=content, head_extra=head_extra)
    return text.encode("utf-8")


def _field(name: str, value: str, error: str | None) -> str:
    """One labelled input with its error message."""
    fid = f"f-{name}"
    attrs = _INPUTS[name]
    extra = ""
    err_html = ""
    if error:
        extra = f' aria-invalid="true" aria-describedby="{fid}-err"'
        err_html = f'<p class="err" id="{fid}-err">{escape(error)}</p>'
    shown = "" if name == "password" else escape(value or "")
    return (f'<div class="field{" has-err" if error else ""}">'
            f'<label for="{fid}">{escape(FIELD_LABELS[name])}</label>{err_html}'
            f'<input id="{fid}" name="{name}" {attrs} required value="{shown}"{extra}>'
            f'</div>')


def _summary(errors: dict[str, str], message: str | None) -> str:
    """The error summary at the top of the form (focused by the script)."""
    if not errors and not message:
        return '<div class="summary" id="summary" role="alert" tabindex="-1" hidden></div>'
    items = "".join(f'<li><a href="#f-{escape(k)}">{escape(v)}</a></li>'
                    for k, v in errors.items() if k in _INPUTS)
    items += "".join(f"<li>{escape(v)}</li>" for k, v in errors.items() if k not in _INPUTS)
    text = f"<p>{escape(message)}</p>" if message else ""
    lst = f"<ul>{items}</ul>" if items else ""
    return (f'<div class="summary" id="summary" role="alert" tabindex="-1">'
            f'<h2>There is a problem</h2>{text}{lst}</div>')


def _tabs(base: str, modes: list[str], current: str) -> str:
    """The mode tabs: plain links, the current one marked."""
    items = []
    for m in modes:
        cur = ' aria-current="page"' if m == current else ""
        items.append(f'<li><a href="{escape(base)}?mode={m}"{cur}>{MODE_TITLES[m]}</a></li>')
    return f'<nav class="tabs" aria-label="Callback type"><ul>{"".join(items)}</ul></nav>'


def _hint(app_cfg, mode: str) -> str:
    """What the chosen mode does, in one sentence."""
    if mode == "extended":
        return "Sign in, tell us where to reach you and whom to call: we ring you, then connect you."
    if mode == "simple":
        return (f"We ring you, then connect you to {escape(app_cfg.second_number)}. "
                "No password needed.")
    return "We ring you; a voice menu then lets you check your balance and dial a number."


def form_page(app_cfg, base: str, modes: list[str], mode: str, csrf: str,
              values: dict | None = None, errors: dict | None = None, message: str | None = None,
              offer_token: bool = False) -> bytes:
    """The callback form in ``mode`` (with the values and errors of a refused attempt)."""
    values, errors = values or {}, errors or {}
    fields = "".join(_field(n, values.get(n, ""), errors.get(n)) for n in MODE_FIELDS[mode])
    form = (f'<form class="callback" method="post" action="{escape(base)}" novalidate>'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="mode" value="{mode}">'
            f'<fieldset><legend>{MODE_TITLES[mode]} WEB callback</legend>'
            f'<p class="hint">{_hint(app_cfg, mode)}</p>{fields}'
            f'<button type="submit">{BUTTONS[mode]}</button></fieldset></form>')
    token = ""
    if offer_token:
        token = (f'<details class="token"><summary>Have a Hosted access token?</summary>'
                 # base is "/" at the root: "//hosted-access" would name another host.
                 f'<form method="post" action="{escape(base.rstrip("/"))}/hosted-access">'
                 f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
                 f'<div class="field"><label for="f-token">{FIELD_LABELS["token"]}</label>'
                 f'<input id="f-token" name="token" type="password" autocomplete="off" required>'
                 f'</div><button type="submit">Unlock Hosted</button></form></details>')
    content = (f'<h1>Request a callback</h1>{_tabs(base, modes, mode)}{_summary(errors, message)}'
               f'{form}{token}{status_panel(base, None, "")}')
    return layout(app_cfg, base, f"{MODE_TITLES[mode]} callback", content)


def _cost(charges: dict | None) -> str:
    """``0.12 USD (you: 0.02, destination: 0.10)`` or an empty string."""
    if not charges:
        return ""
    cur = charges.get("currency") or ""
    parts = [f"{charges.get('total')} {cur}".strip()]
    legs = [f"{label}: {charges[k]}" for k, label in (("A", "call to you"), ("B", "call out"))
            if charges.get(k) is not None]
    return parts[0] + (f" ({', '.join(legs)})" if legs else "")


def _reason(status: dict) -> str:
    """The cause of the end, as a person reads it."""
    cause = status.get("cause") or {}
    reason = cause.get("description") or cause.get("reason") or ""
    if cause.get("sip_status"):
        reason = f"{reason} (SIP {cause['sip_status']})".strip()
    return reason


def _node(status: dict | None) -> str:
    """The line naming the node that runs the callback, for the operator a user asks."""
    node = (status or {}).get("node")
    return f'<p class="node" id="o-node">Server: {escape(str(node))}</p>' if node else ""


def status_panel(base: str, status: dict | None, api_url: str) -> str:
    """The progress list; hidden and empty on the form page, where the script fills it."""
    current = status["status"] if status else ""
    names = [s for s, _ in STEPS]
    reached = names.index(current) if current in names else -1
    items = []
    for i, (step, label) in enumerate(STEPS):
        state = "done" if i < reached or (i == reached and current == "ended") else (
            "now" if i == reached else "todo")
        aria = ' aria-current="step"' if state == "now" else ""
        items.append(f'<li data-step="{step}" class="{state}"{aria}>{label}</li>')
    text = STATUS_TEXT.get(current, "")
    reason = _reason(status) if status else ""
    cost = _cost(status.get("charges")) if status else ""
    hidden_outcome = "" if (reason or cost) else " hidden"
    final = "1" if current in FINAL_STATUSES else "0"
    return (f'<section class="status" id="status" data-status="{escape(current)}" '
            f'data-status-url="{escape(api_url)}" data-final="{final}"'
            f'{"" if status else " hidden"} aria-labelledby="status-h">'
            f'<h2 id="status-h" tabindex="-1">Your callback</h2>'
            f'<ol class="steps">{"".join(items)}</ol>'
            f'<p class="status-text" id="status-text" role="status" aria-live="polite">'
            f'{escape(text)}</p>'
            f'<dl class="outcome" id="outcome"{hidden_outcome}>'
            f'<dt>Reason</dt><dd id="o-reason">{escape(reason or "–")}</dd>'
            f'<dt>Cost</dt><dd id="o-cost">{escape(cost or "–")}</dd></dl>'
            f'{_node(status)}'
            f'<p><a class="again" href="{escape(base)}">Request another callback</a></p></section>')


def status_page(app_cfg, base: str, status: dict, api_url: str, refresh: int = 2) -> bytes:
    """The status page; without JavaScript it reloads itself until the status is final."""
    head = ""
    if status["status"] not in FINAL_STATUSES:
        head = f'<noscript><meta http-equiv="refresh" content="{int(refresh)}"></noscript>'
    content = "<h1>Callback status</h1>" + status_panel(base, status, api_url)
    return layout(app_cfg, base, "Callback status", content, head)


def message_page(app_cfg, base: str, title: str, message: str) -> bytes:
    """A page with one message (not found, refused outside the form...)."""
    content = (f'<h1>{escape(title)}</h1><p>{escape(message)}</p>'
               f'<p><a href="{escape(base)}">Back to the callback page</a></p>')
    return layout(app_cfg, base, title, content)
