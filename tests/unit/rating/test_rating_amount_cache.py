"""The remembered amounts of the standard rule (``rating._AMOUNTS``) never change an answer."""

from __future__ import annotations

from decimal import Decimal

from cbserver.billing import rating
from cbserver.billing.rating import charge
from tests.unit.rating.helpers import make_rate, reference_amount


def test_two_tiers_with_the_same_intervals_keep_their_own_amounts():
    cheap = make_rate("1", 60, 6, "0.01", "0.02")
    dear = make_rate("1", 60, 6, "0.10", "0.20")
    for duration in (1, 59, 60, 61, 66, 67, 3600):
        for rate, (p1, p2) in ((cheap, ("0.01", "0.02")), (dear, ("0.10", "0.20"))):
            # asked twice: the second answer comes from the cache, and must be the same
            for _ in range(2):
                got = charge(rate, duration)
                assert (got.amount, got.charged_seconds) == reference_amount(duration, 60, 6, p1, p2)


def test_a_formula_is_applied_to_each_duration_not_taken_from_the_cache():
    plain = make_rate("1", 60, 60, "1", "1")
    surcharged = make_rate("1", 60, 60, "1", "1", formula="amount + duration / 1000")
    assert charge(plain, 61).amount == Decimal("2.00000")
    # 61 s and 62 s share their charged seconds (120) but not the formula's duration
    assert charge(surcharged, 61).amount == Decimal("2.06100")
    assert charge(surcharged, 62).amount == Decimal("2.06200")


def test_the_cache_stays_within_its_bound(monkeypatch):
    monkeypatch.setattr(rating, "_AMOUNTS", {})
    monkeypatch.setattr(rating, "_AMOUNTS_MAX", 8)
    rate = make_rate("1", 1, 1, "0.60", "0.60")
    for duration in range(1, 30):
        assert charge(rate, duration).amount == Decimal(duration) / 100
    assert len(rating._AMOUNTS) == 8
    assert min(charged for _, charged in rating._AMOUNTS) == 22  # the oldest went first
