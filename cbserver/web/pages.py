"""Server-rendered HTML of the callback page: the form with its three modes, and the status.

The markup is in Jinja2 templates (``templates/*.html``, autoescaped: see
``cbserver.web.templating``); this module only decides what they show. The page works
without JavaScript (tabs are links, the form posts, the status page refreshes itself through
``<noscript><meta refresh>``); ``static/page.js`` enhances it in place.
"""

from __future__ import annotations

import json
from pathlib import Path

from cbserver.billing.currencies import format_amount, minor_unit_exceptions
from cbserver.callback.api import FINAL_STATUSES
from cbserver.web.api import FIELD_LABELS, MODE_FIELDS
from cbserver.web.templating import render

TEMPLATES = Path(__file__).resolve().parent / "templates"
STEPS = (("calling_you", "Calling you"), ("answered", "Answered"),
         ("calling_destination", "Calling the destination"), ("connected", "Connected"),
         ("ended", "Ended"))
MODE_TITLES = {"extended": "Extended", "simple": "Simple", "hosted": "Hosted"}
BUTTONS = {"extended": "Connect Us Now!", "simple": "Call Me Now!", "hosted": "Call Me Now!"}
# Each input's type and its other attributes (autocomplete hints, mobile keyboards).
_INPUTS = {
    "account": ("text", (("autocomplete", "username"), ("autocapitalize", "none"),
                         ("spellcheck", "false"))),
    "password": ("password", (("autocomplete", "current-password"),)),
    "phone": ("tel", (("autocomplete", "tel"), ("inputmode", "tel"))),
    "destination": ("tel", (("autocomplete", "off"), ("inputmode", "tel"))),
}
STATUS_TEXT = {
    "calling_you": "Calling you now: please answer your phone.",
    "answered": "You answered. Please hold on.",
    "calling_destination": "Calling the destination…",
    "connected": "Connected: you are talking.",
    "ended": "The call has ended.",
    "refused": "The callback could not be made.",
}
FAILED_TEXT = "The callback could not be completed."


def _page(name: str, app_cfg, home: str, title: str, **context) -> bytes:
    """Template ``name`` with what the layout needs."""
    context.setdefault("refresh", 0)
    return render(TEMPLATES, name, app_name=app_cfg.name, home=home, title=title, **context)


def _hint(app_cfg, mode: str) -> str:
    """What the chosen mode does, in one sentence."""
    if mode == "extended":
        return "Sign in, tell us where to reach you and whom to call: we ring you, then connect you."
    if mode == "simple":
        return (f"We ring you, then connect you to {app_cfg.second_number}. "
                "No password needed.")
    return "We ring you; a voice menu then lets you check your balance and dial a number."


def form_page(app_cfg, base: str, modes: list[str], mode: str, csrf: str,
              values: dict | None = None, errors: dict | None = None, message: str | None = None,
              offer_token: bool = False) -> bytes:
    """The callback form in ``mode`` (with the values and errors of a refused attempt)."""
    values, errors = values or {}, errors or {}
    fields = [{"name": n, "label": FIELD_LABELS[n], "type": _INPUTS[n][0], "attrs": _INPUTS[n][1],
               "error": errors.get(n), "value": "" if n == "password" else (values.get(n) or "")}
              for n in MODE_FIELDS[mode]]
    # Errors of a field link to it; the others (body, csrf...) are plain items.
    summary = [(k, v) for k, v in errors.items() if k in _INPUTS]
    summary += [(None, v) for k, v in errors.items() if k not in _INPUTS]
    return _page("callback_form.html", app_cfg, base, f"{MODE_TITLES[mode]} callback",
                 base=base, modes=modes, mode=mode, mode_titles=MODE_TITLES, csrf=csrf,
                 fields=fields, summary_items=summary, message=message,
                 hint=_hint(app_cfg, mode), button=BUTTONS[mode], offer_token=offer_token,
                 token_label=FIELD_LABELS["token"], panel=status_view(None, ""))


def cost_text(charges: dict | None) -> str:
    """``0.12 USD (call to you: 0.02, call out: 0.10)`` or an empty string.

    Amounts are shown in the currency's usual precision (``format_amount``); the API and
    the xDRs keep the rating's 5 decimal places.
    """
    if not charges:
        return ""
    cur = charges.get("currency") or ""
    total = f"{format_amount(charges.get('total'), cur)} {cur}".strip()
    legs = [f"{label}: {format_amount(charges[k], cur)}"
            for k, label in (("A", "call to you"), ("B", "call out"))
            if charges.get(k) is not None]
    return total + (f" ({', '.join(legs)})" if legs else "")


def _reason(status: dict) -> str:
    """The cause of the end, as a person reads it."""
    cause = status.get("cause") or {}
    reason = cause.get("description") or cause.get("reason") or ""
    if cause.get("sip_status"):
        reason = f"{reason} (SIP {cause['sip_status']})".strip()
    return reason


def failed_step(status: dict | None) -> str | None:
    """The step an ended callback failed at (``calling_you``, ``calling_destination``) or None.

    A leg that ended without being answered (busy, no answer, rejected) is where it failed:
    leg A at "Calling you", leg B at "Calling the destination". A callback whose legs were
    both answered, or whose B leg was never called (a Hosted caller who hung up in the voice
    menu), did not fail at a step.
    """
    if not status or status.get("status") != "ended":
        return None
    legs = status.get("legs") or {}
    if (legs.get("A") or {}).get("state") == "failed":
        return "calling_you"
    if (legs.get("B") or {}).get("state") in ("failed", "calling", "ringing"):
        return "calling_destination"
    return None


def _leg_reason(status: dict, step: str) -> str:
    """Why the failed leg ended (its SIP reason and status), else the callback's cause."""
    leg = (status.get("legs") or {}).get("A" if step == "calling_you" else "B") or {}
    why = leg.get("reason") or ""
    if leg.get("sip_status"):
        why = f"{why} (SIP {leg['sip_status']})".strip()
    return why or _reason(status) or "no answer"


def step_states(status: dict | None) -> list[dict]:
    """Each step with its state: ``done``, ``now``, ``todo``, or ``failed`` (with ``why``)."""
    current = status["status"] if status else ""
    names = [s for s, _ in STEPS]
    failed = failed_step(status)
    reached = names.index(failed or current) if (failed or current) in names else -1
    out = []
    for i, (step, label) in enumerate(STEPS):
        if failed:
            # Steps after the failed one were never reached; "Ended" is, it is where we are.
            state = "done" if i < reached or step == "ended" else (
                "failed" if i == reached else "todo")
        else:
            state = "done" if i < reached or (i == reached and current == "ended") else (
                "now" if i == reached else "todo")
        out.append({"name": step, "label": label, "state": state,
                    "why": _leg_reason(status, failed) if state == "failed" else ""})
    return out


def status_view(status: dict | None, api_url: str) -> dict:
    """What the status panel shows for ``status`` (None: the empty panel of the form page)."""
    current = status["status"] if status else ""
    failed = failed_step(status)
    return {"current": current, "api_url": api_url, "final": current in FINAL_STATUSES,
            "shown": status is not None, "steps": step_states(status),
            "text": FAILED_TEXT if failed else STATUS_TEXT.get(current, ""),
            "reason": _reason(status) if status else "",
            "cost": cost_text(status.get("charges")) if status else "",
            # The node running the callback, for the operator a caller asks (issue 16).
            "node": str((status or {}).get("node") or ""),
            "minor_units": json.dumps(minor_unit_exceptions(), sort_keys=True,
                                      separators=(",", ":"))}


def status_page(app_cfg, base: str, status: dict, api_url: str, refresh: int = 2) -> bytes:
    """The status page; without JavaScript it reloads itself until the status is final."""
    return _page("callback_status.html", app_cfg, base, "Callback status", base=base,
                 panel=status_view(status, api_url),
                 refresh=0 if status["status"] in FINAL_STATUSES else int(refresh))


def message_page(app_cfg, base: str, title: str, message: str) -> bytes:
    """A page with one message (not found, refused outside the form...)."""
    return _page("message.html", app_cfg, base, title, message=message)
