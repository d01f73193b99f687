"""Readiness: what in the catalog would make this node refuse callbacks, found before a caller does.

Every piece of the manual's set-up can be right on its own and still not add up: a product
whose rating list has no entry for this node and the instance's access code, a Simple-mode
number its tariff has no rate for, a Hosted instance whose internal account was deactivated.
Each of these shows up only when a caller meets it, as a refused callback. ``check_readiness``
reads the catalog once (through the server's ``Database`` pool) and returns one ``Finding``
per problem, for the three places an operator looks: the server's start-up log, ``cbserver
check`` and the admin API's ``GET /v1/readiness``.

Severity: ``error`` when a configured mode cannot work for anyone (the Hosted internal
account, a tariff that cannot be loaded), ``warning`` when some accounts or some prices are
affected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from cbserver.billing.authorize import (
    CALLBACK_FAIL,
    AuthorizationError,
    account_refusal,
    callback_fail_entry,
    choose_entry,
)
from cbserver.billing.domain import AccountInfo, LoadedTariff, RatingEntry, TariffNotFound
from cbserver.billing.model import RatingError
from cbserver.billing.numbers import normalise_number
from cbserver.billing.rating import select_rate

ERROR = "error"
WARNING = "warning"

@dataclass(frozen=True)
class Finding:
    """One problem: how bad, a stable code, what it is about, and a sentence for the operator."""

    severity: str
    code: str
    subject: str
    message: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {"severity": self.severity, "code": self.code, "subject": self.subject,
                "message": self.message, **({"details": self.details} if self.details else {})}

    def __str__(self) -> str:
        return f"{self.severity}: {self.subject}: {self.message}"


@dataclass(frozen=True)
class Product:
    """A product as readiness sees it: voice service, active accounts, entries at this node."""

    id: int
    name: str
    has_voice: bool
    active_accounts: int
    entries: list[RatingEntry]  # its voice rating entries in force at this node (its own or '*')


@dataclass
class Facts:
    """What the checks read from the catalog, loaded once."""

    node: str
    products: dict[int, Product]
    tariffs: dict[int, LoadedTariff | Exception]
    internal: dict[str, AccountInfo | None]
    offpeak_orphans: list[tuple[str, int]]


@defer.inlineCallbacks
def load_facts(store, node: str, internal_accounts: Iterable[str]):
    """Fire with the ``Facts`` for ``node``: products, their entries, the tariffs they name.

    ``store`` provides ``IReadinessStore``.
    """
    internal = {}
    for account_id in sorted(set(internal_accounts)):
        internal[account_id] = yield store.fetch_account(account_id)
    entries: dict[int, list[RatingEntry]] = {}
    for product_id, entry in (yield store.voice_entries(node)):
        entries.setdefault(product_id, []).append(entry)
    products = {pid: Product(pid, name, bool(voice), int(count), entries.get(pid, []))
                for pid, name, voice, count in (yield store.products())}
    tariffs: dict[int, LoadedTariff | Exception] = {}
    for tariff_id in sorted({e.tariff_id for es in entries.values() for e in es}):
        try:
            tariffs[tariff_id] = yield store.load_tariff(tariff_id)
        except (TariffNotFound, RatingError, ValueError) as e:
            tariffs[tariff_id] = e
    orphans = [(name, int(n)) for name, n in (yield store.offpeak_orphans())]
    return Facts(node, products, tariffs, internal, orphans)


def _accounts(n: int) -> str:
    return f"{n} active account{'' if n == 1 else 's'}"


def _in_effect(tariff: LoadedTariff, now: dt.datetime) -> bool:
    """Does any rate of the tariff apply at ``now`` (its first version has started)?"""
    return any(v.starts[0] <= now for v in tariff.rates.index.values())


def _rated(tariff: LoadedTariff, number: str, now: dt.datetime) -> bool:
    try:
        select_rate(tariff.rates, normalise_number(number), now)
    except RatingError:
        return False
    return True


def evaluate(facts: Facts, applications: Sequence, now: dt.datetime) -> list[Finding]:
    """The findings for ``applications`` (``ApplicationConfig``) over ``facts`` at ``now``."""
    now = now.astimezone(dt.UTC)
    out: list[Finding] = []
    for tid, t in sorted(facts.tariffs.items()):
        if not isinstance(t, LoadedTariff):
            out.append(Finding(ERROR, "tariff_unusable", f"tariff id {tid}",
                               f"cannot be loaded ({t}); every call it rates is refused",
                               {"tariff_id": tid}))
    for app in applications:
        out += _application(facts, app, now)
    for name, count in facts.offpeak_orphans:
        out.append(Finding(WARNING, "offpeak_without_period", f"tariff {name!r}",
                           f"{count} rate{'' if count == 1 else 's'} in peak/off-peak mode but the "
                           "tariff has no off-peak period: their off-peak prices never apply",
                           {"tariff": name, "rates": count}))
    return _unique(out)


def _unique(findings: list[Finding]) -> list[Finding]:
    """Drop repeats: product and tariff findings do not name the instance, so two instances
    with one access code (or one Simple-mode number) report a shared gap once."""
    seen, out = set(), []
    for f in findings:
        key = (f.severity, f.code, f.subject, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _application(facts: Facts, app, now: dt.datetime) -> list[Finding]:
    """The findings of one instance: its Hosted internal account, then each product's path."""
    out: list[Finding] = []
    subject = f"application {app.name!r}"
    node, code = facts.node, app.access_code
    hosted = bool(app.hosted_allowed_clients and app.internal_account)
    internal_product = None
    if hosted:
        account = facts.internal.get(app.internal_account)
        refusal = (AuthorizationError("unknown_account", "no such account") if account is None
                   else account_refusal(account, now))
        if refusal is not None:
            out.append(Finding(ERROR, "internal_account_unusable", subject,
                               f"internal account {app.internal_account!r} cannot be used "
                               f"({refusal}); Hosted callbacks will be refused",
                               {"account": app.internal_account, "refusal": refusal.reason}))
        else:
            internal_product = facts.products.get(account.product_id)
            if internal_product is not None and choose_entry(internal_product.entries, code) is None:
                out.append(Finding(ERROR, "internal_account_unrated", subject,
                                   f"internal account {app.internal_account!r}: its product "
                                   f"{internal_product.name!r} has no voice rating entry for node "
                                   f"{node!r} (nor for any node, '*') and access code {code!r} "
                                   "(nor an empty one); "
                                   "Hosted callbacks will be refused",
                                   {"account": app.internal_account,
                                    "product": internal_product.name}))
    for product in facts.products.values():
        users = [_accounts(product.active_accounts)] if product.active_accounts else []
        if product is internal_product:
            users.append(f"Hosted legA (internal account {app.internal_account!r})")
        if not users:
            continue  # nobody calls through it yet
        who = " and ".join(users)
        psubject = f"product {product.name!r}"
        if not product.has_voice:
            out.append(Finding(WARNING, "no_voice_service", psubject,
                               f"does not include the voice service: callbacks of {who} are "
                               "refused", {"product": product.name}))
            continue
        chosen = choose_entry(product.entries, code)
        if chosen is None:
            if product.active_accounts:  # (Hosted legA is the error above)
                out.append(Finding(WARNING, "no_rating_entry", psubject,
                                   f"no voice rating entry for node {node!r} (nor for any node, "
                                   f"'*') and access code "
                                   f"{code!r} (nor an empty one): callbacks of its "
                                   f"{_accounts(product.active_accounts)} are refused",
                                   {"product": product.name, "node": node, "access_code": code}))
            continue
        tariff = facts.tariffs.get(chosen.tariff_id)
        if not isinstance(tariff, LoadedTariff):
            continue  # reported once, as tariff_unusable
        tsubject = f"tariff {tariff.name!r}"
        if not _in_effect(tariff, now):
            out.append(Finding(WARNING, "no_rate_in_effect", tsubject,
                               f"has no rate in effect now: callbacks of product {product.name!r} "
                               f"({who}) are refused", {"tariff": tariff.name,
                                                        "product": product.name}))
            continue
        if app.second_number and product.active_accounts \
                and not _rated(tariff, app.second_number, now):
            out.append(Finding(WARNING, "second_number_unrated", tsubject,
                               f"no rate for the Simple-mode number {app.second_number}: "
                               f"Simple callbacks of product {product.name!r} "
                               f"({_accounts(product.active_accounts)}) are refused",
                               {"tariff": tariff.name, "product": product.name,
                                "number": app.second_number}))
        if app.special_charge_if_legb_fails:
            out += _fail_entry(facts, product, tariff, now)
    return out


def _fail_entry(facts: Facts, product: Product, tariff: LoadedTariff,
                now: dt.datetime) -> list[Finding]:
    """legA of a callback whose legB failed is rated by the product's CALLBACK_FAIL entry; when
    that entry or its rates are missing, legA keeps the callback tariff (and a warning per call)."""
    fail_entry = callback_fail_entry(product.entries)
    if fail_entry is None:
        return [Finding(WARNING, "no_callback_fail_entry", f"product {product.name!r}",
                        "legA is to be charged specially when legB fails, but the product has no "
                        f"{CALLBACK_FAIL} entry for node {facts.node!r}: such legA are charged by "
                        f"tariff {tariff.name!r} instead", {"product": product.name, "node": facts.node})]
    fail = facts.tariffs.get(fail_entry.tariff_id)
    if isinstance(fail, LoadedTariff) and not _in_effect(fail, now):
        return [Finding(WARNING, "no_rate_in_effect", f"tariff {fail.name!r}",
                        f"has no rate in effect now: the {CALLBACK_FAIL} charge of product "
                        f"{product.name!r} falls back to tariff {tariff.name!r}",
                        {"tariff": fail.name, "product": product.name})]
    return []


@defer.inlineCallbacks
def check_readiness(store, cfg, now: dt.datetime):
    """Fire with the findings for this node's configuration (``cfg``) and catalog at ``now``."""
    internal = [a.internal_account for a in cfg.application
                if a.hosted_allowed_clients and a.internal_account]
    facts = yield load_facts(store, cfg.server.node, internal)
    return evaluate(facts, cfg.application, now)


def _rated_somewhere(facts: Facts, applications: Sequence, now: dt.datetime) -> bool:
    """Does some instance have a product that someone calls through (active accounts, or its
    Hosted internal account) with a voice entry here whose tariff has a rate in effect?"""
    internal = {a.product_id for a in facts.internal.values() if a is not None}
    for app in applications:
        for product in facts.products.values():
            if not product.has_voice or not (product.active_accounts or product.id in internal):
                continue
            chosen = choose_entry(product.entries, app.access_code)
            tariff = facts.tariffs.get(chosen.tariff_id) if chosen is not None else None
            if isinstance(tariff, LoadedTariff) and _in_effect(tariff, now):
                return True
    return False


@defer.inlineCallbacks
def node_catalog_state(store, cfg, now: dt.datetime):
    """Fire with ``(ok, reason)``: can this node's catalog take callbacks at all (``/readyz``)?

    Not ready when any finding is an error (a configured mode cannot work for anyone), or
    when no product anybody calls through can be rated at this node (the node name has no
    rating-list entry, nor ``*``): such a node would refuse every callback, so a balancer
    must not send it any. Warnings that affect some accounts only leave it ready. ``reason``
    names the finding codes or the node, never products or accounts (it is public).
    """
    internal = [a.internal_account for a in cfg.application
                if a.hosted_allowed_clients and a.internal_account]
    facts = yield load_facts(store, cfg.server.node, internal)
    errors = sorted({f.code for f in evaluate(facts, cfg.application, now) if f.severity == ERROR})
    if errors:
        return False, "catalog errors: " + ", ".join(errors) + " (see `cbserver check`)"
    if not _rated_somewhere(facts, cfg.application, now):
        return False, (f"no product can be rated at node {facts.node!r}: no rating-list entry for "
                       "this node nor for any node ('*') with a rate in effect")
    return True, ""
