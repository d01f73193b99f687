"""The domain's own values that the stores hand back: accounts, rating entries, balances,
reservation decisions and loaded tariffs.

They live here, in ``billing``, so that the domain never imports ``cbserver.db``: the stores
under ``db/`` build these from rows (DESIGN.md rule 9).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from cbserver.billing.model import TariffRates

#: Seconds after its process was last seen that a reservation stops counting.
RESERVATION_EXPIRY = 60


@dataclass(frozen=True)
class AccountInfo:
    """The fields of an account (with its customer and product) that authorization reads."""

    id: str
    customer_id: int
    product_id: int
    account_type: str
    balance_control: str
    balance: Decimal
    credit_limit: Decimal | None
    status: str
    activation_date: dt.datetime | None
    expiration_date: dt.datetime | None
    avail_after_first_use_days: int | None
    avail_after_last_use_days: int | None
    # When the availability periods start: the first use or recharge, the last use or
    # recharge (sql/033), as the manual counts them; not only calls.
    first_usage: dt.datetime | None
    last_usage: dt.datetime | None
    password_hash: str | None
    internal: bool
    has_voice: bool
    customer_balance_control: str
    customer_balance: Decimal
    customer_credit_limit: Decimal | None
    customer_currency: str
    product_currency: str
    # What the store read it with says the account is unchanged since (the database's
    # cb_account_fingerprint; None: not known). legB's re-authorization hands it back.
    fingerprint: str | None = field(default=None, compare=False)

    @property
    def subordinate(self) -> bool:
        """True when the account spends from its customer's balance."""
        return self.balance_control == "subordinate"

    @property
    def spend_rule(self) -> str:
        """How the locked balance row gives the spendable amount (``authorize.spendable``)."""
        if self.subordinate:
            return "prepaid" if self.customer_balance_control == "prepaid" else "postpaid"
        return "balance" if self.account_type == "debit" else "limit"

    @property
    def owner_key(self) -> str:
        """Names the balance this account draws on: ``account:<id>`` or ``customer:<id>``."""
        return f"customer:{self.customer_id}" if self.subordinate else f"account:{self.id}"


@dataclass(frozen=True)
class RatingEntry:
    """One entry of a product's rating list (service voice, this node)."""

    access_code: str
    tariff_id: int
    overdraft_protection: bool


@dataclass(frozen=True)
class Balance:
    """A locked balance row: the raw balance and credit limit, and what others have reserved."""

    balance: Decimal
    credit_limit: Decimal | None
    reserved_by_others: Decimal
    open_calls: int


@dataclass(frozen=True)
class ReservationDecision:
    """What to hold: the amounts of legs A and B (zero amounts are not stored)."""

    amount_a: Decimal
    amount_b: Decimal
    currency: str
    lifetime: int = 86400  # seconds after which the hold expires even if its process lives
    # The decision is the same for any free budget (spendable minus others' holds) of at
    # least this much, or without a limit; None: only for the very Balance it was made on.
    min_free: Decimal | None = None


class TariffNotFound(LookupError):
    """No tariff with that id or name."""


@dataclass(frozen=True)
class LoadedTariff:
    """A tariff as loaded: its id and the rating core's ``TariffRates``."""

    tariff_id: int
    rates: TariffRates

    @property
    def name(self) -> str:
        """The tariff's name."""
        return self.rates.name
