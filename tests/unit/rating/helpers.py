"""Shared builders and an independent reference implementation for rating tests."""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from cbserver.billing.model import Rate, TariffRates

UTC = dt.UTC
EPOCH_2020 = dt.datetime(2020, 1, 1, tzinfo=UTC)


def make_rate(prefix="1818", f=60, n=6, p1="0.10", p2="0.05", since=EPOCH_2020, **kw):
    return Rate(prefix, f, n, Decimal(p1), Decimal(p2), since, **kw)


def make_tariff(*rates, **kw):
    kw.setdefault("currency", "USD")
    return TariffRates(rates=rates, **kw)


def reference_amount(d, f, n, p1, p2):
    """The issue's rule computed with Fractions, then rounded half up to 5 places."""
    if d == 0:
        return Decimal("0.00000"), 0
    extra = max(0, d - f)
    c = f + -(-extra // n) * n
    exact = Fraction(Decimal(p1)) * f / 60 + Fraction(Decimal(p2)) * (c - f) / 60
    scaled = exact * 100000
    whole = scaled.numerator // scaled.denominator
    if scaled - whole >= Fraction(1, 2):
        whole += 1
    return (Decimal(whole) / Decimal(100000)).quantize(Decimal("0.00001"), ROUND_HALF_UP), c
