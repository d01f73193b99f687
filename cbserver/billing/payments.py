"""Payments (recharges) and refunds: the way money comes into a balance.

Without them a balance only goes down (debit account) or its debt only grows (credit
account, customer). ``Payments(store, clock)`` records each one in the append-only ``payments``
table (sql/033) and moves the owner's balance in the same transaction, under the owner's row
lock (``ICatalogTransaction.lock_account``).

Sign convention. ``amount`` is always positive; ``kind`` is ``payment`` (money in) or
``refund`` (money given back, or a mistaken payment corrected: rows are never edited). The
stored balances mean different things (see ``cbserver.billing.accounts``), so:

=====================  ==========================  ==========  ==========
owner                  ``balance`` is              payment     refund
=====================  ==========================  ==========  ==========
debit account          money left                  +amount     -amount
credit account         amount owed                 -amount     +amount
customer               amount owed (prepaid money  -amount     +amount
                       is a negative balance)
=====================  ==========================  ==========  ==========

and in every case what ``cbserver.billing.authorize.spendable`` allows grows by exactly the
amount of a payment (shrinks by a refund's); where it is unlimited it stays unlimited.

Rules: a subordinate account has no balance of its own (its customer is paid instead); the
currency is the owner's (the account's product's, the customer's) and a different one is
refused; the amount has at most the currency's decimal places (ISO 4217). A refund may not
exceed what was paid in net of earlier refunds, nor the money left where the balance is money
(a debit account, a prepaid customer without a credit limit). A payment to an account counts
as a recharge for its availability periods (``accounts.first_recharge``/``last_recharge``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cbserver.billing import validation as v
from cbserver.billing.audit import Audited
from cbserver.billing.catalogrules import lookup, now
from cbserver.billing.currencies import minor_units
from cbserver.billing.domain import RESERVATION_EXPIRY
from cbserver.billing.validation import ConflictError, Field, NotFound, ValidationError

_DECIMAL = v.decimal(None)


def _amount(field: str, value: Any) -> Decimal:
    """A positive exact decimal; a negative one is pointed at ``kind: refund``."""
    number = _DECIMAL(field, value)
    if number <= 0:
        raise ValidationError(field, f"must be more than 0, got {number} (money given back is "
                                     "kind \"refund\" with a positive amount)")
    return number


PAYMENT = {
    "amount": Field(_amount, required=True),
    "kind": Field(v.choice("payment", "refund"), default="payment"),
    "currency": Field(v.optional(v.currency), default=None),
    "note": Field(v.text(500, allow_empty=True), default=""),
}

#: Who may be named as having made a payment: the admin API, the CLI, provisioning, tests.
_MADE_BY = v.text(100)


def check_amount(amount: Decimal, currency: str) -> Decimal:
    """``amount`` if it is money in ``currency``: more than zero, at most its decimal places."""
    if amount <= 0:
        raise ValidationError("amount", f"must be more than 0, got {amount}")
    places = minor_units(currency)
    if -amount.as_tuple().exponent > places:
        raise ValidationError("amount", f"{currency} amounts have at most {places} decimal "
                                        f"place(s), got {amount}")
    return amount


def check_currency(given: str | None, owner_currency: str) -> str:
    """The owner's currency; a payment stated in another one is refused."""
    if given is not None and given != owner_currency:
        raise ValidationError("currency", f"the balance is in {owner_currency}, not {given}")
    return owner_currency


def balance_delta(owner: str, kind: str, amount: Decimal) -> Decimal:
    """What a ``kind`` of ``amount`` adds to the stored balance of ``owner``.

    ``owner`` is ``debit`` (balance = money left), ``credit`` or ``customer`` (balance =
    amount owed). A payment raises the money left and lowers what is owed.
    """
    money_in = amount if kind == "payment" else -amount
    return money_in if owner == "debit" else -money_in


def money_left(owner: str, balance: Decimal, credit_limit: Decimal | None,
               balance_control: str | None = None) -> Decimal | None:
    """The money a refund may take back where the balance is money; None where it is a debt.

    A debit account's balance; a prepaid customer without a credit limit holds ``-balance``.
    """
    if owner == "debit":
        return balance
    if owner == "customer" and balance_control == "prepaid" and credit_limit is None:
        return -balance
    return None


async def _check_refund(tx, amount: Decimal, paid: Decimal, left: Decimal | None,
                        owner_key: str) -> None:
    """Refuse a refund larger than what was paid in, or than the money left that no call in
    progress holds (a call's final charge must still find its reservation's money)."""
    if amount > paid:
        raise ValidationError("amount", f"a refund of {amount} is more than was paid in "
                                        f"(net of refunds: {paid})")
    if left is None:
        return
    held = await tx.held(owner_key, RESERVATION_EXPIRY)
    if amount > left - held:
        detail = f", of which {held} is held by calls in progress" if held else ""
        raise ValidationError("amount", f"a refund of {amount} is more than the money left "
                                        f"({left}{detail})")


class Payments(Audited):
    """Record payments and refunds and move balances, over a ``Database`` pool (audited)."""

    def __init__(self, store, clock, actor=None):
        self.store = store  # ICatalogStore
        self.clock = clock
        if actor is not None:
            self.actor = actor

    async def recharge_account(self, account_id: str, data: Mapping[str, Any], *,
                               made_by: str) -> dict:
        """Pay into (or refund from) an individual account; the stored payment row.

        ``data``: ``amount`` (required), ``kind`` (payment/refund), ``currency`` (optional,
        must be the account's), ``note``. ``balance_after`` in the row is the new balance.
        """
        row = v.clean(PAYMENT, data)
        who = _MADE_BY("made_by", made_by)

        async def run(tx):
            account = await tx.lock_account(account_id)
            if account is None:
                raise NotFound("account", account_id)
            if account["balance_control"] == "subordinate":
                raise ConflictError(f"account {account_id!r} spends its customer's balance: pay "
                                    "the customer instead", "account")
            currency = check_currency(row["currency"], account["currency"])
            amount = check_amount(row["amount"], currency)
            owner = account["account_type"]
            if row["kind"] == "refund":
                await _check_refund(tx, amount, await tx.net_paid("account", account_id),
                                    money_left(owner, account["balance"], account["credit_limit"]),
                                    f"account:{account_id}")
            at = now(self.clock)
            after = await tx.move_account(account_id, balance_delta(owner, row["kind"], amount),
                                              at, recharge=row["kind"] == "payment")
            paid = await tx.insert_payment({
                "account_id": account_id, "customer_id": None, "kind": row["kind"],
                "amount": amount, "currency": currency, "balance_after": after,
                "note": row["note"], "made_by": who, "created_at": at})
            await self._audit(tx, "account", account_id, row["kind"],
                              {"balance": account["balance"]}, {"balance": after, "payment": paid})
            return paid

        return await self.store.transaction(run)

    async def recharge_customer(self, key: int | str, data: Mapping[str, Any], *,
                                made_by: str) -> dict:
        """Pay into (or refund from) a customer's balance, which its subordinate accounts use.

        A prepaid customer's payment is money its subordinate accounts may spend; a postpaid
        one's pays off what it owes. Same ``data`` as ``recharge_account``.
        """
        row = v.clean(PAYMENT, data)
        who = _MADE_BY("made_by", made_by)

        async def run(tx):
            customer = await lookup(tx, "customers", key, kind="customer", lock=True)
            currency = check_currency(row["currency"], customer["currency"])
            amount = check_amount(row["amount"], currency)
            if row["kind"] == "refund":
                await _check_refund(tx, amount, await tx.net_paid("customer", customer["id"]),
                                    money_left("customer", customer["balance"],
                                               customer["credit_limit"], customer["balance_control"]),
                                    f"customer:{customer['id']}")
            after = await tx.move_customer(customer["id"],
                                               balance_delta("customer", row["kind"], amount))
            paid = await tx.insert_payment({
                "account_id": None, "customer_id": customer["id"], "kind": row["kind"],
                "amount": amount, "currency": currency, "balance_after": after,
                "note": row["note"], "made_by": who, "created_at": now(self.clock)})
            await self._audit(tx, "customer", customer["id"], row["kind"],
                              {"balance": customer["balance"]}, {"balance": after, "payment": paid})
            return paid

        return await self.store.transaction(run)

    async def list_account_payments(self, account_id: str, limit=50, offset=0) -> dict:
        """A page of an account's payments and refunds, newest first."""
        limit, offset = v.page_args(limit, offset)

        async def run(tx):
            if await tx.get("accounts", account_id) is None:
                raise NotFound("account", account_id)
            rows, total = await tx.payments_page("account", account_id, limit, offset)
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)

    async def list_customer_payments(self, key: int | str, limit=50, offset=0) -> dict:
        """A page of a customer's payments and refunds, newest first."""
        limit, offset = v.page_args(limit, offset)

        async def run(tx):
            customer = await lookup(tx, "customers", key, kind="customer")
            rows, total = await tx.payments_page("customer", customer["id"], limit, offset)
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)
