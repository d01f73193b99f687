"""The formulas and worked examples of docs/rating.md are checked against the code."""

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest

from cbserver.billing.formula import parse_formula
from cbserver.billing.rating import max_duration, price_leg, quote

from .helpers import UTC, make_rate, make_tariff

DOC = Path(__file__).resolve().parents[3] / "docs" / "rating.md"
TEXT = DOC.read_text(encoding="utf-8")
FORMULAS = re.findall(r"^\| [^|]+ \| `([^`]+)` \|$", TEXT.split("### Examples", 1)[1], re.M)


def test_the_doc_has_formula_examples():
    assert len(FORMULAS) >= 6


@pytest.mark.parametrize("source", FORMULAS)
def test_documented_formula_parses_and_evaluates(source):
    env = {name: Decimal(1) for name in parse_formula(source).names}
    assert parse_formula(source).evaluate(env) >= 0


def worked_tariff():
    return make_tariff(make_rate("1818", f=60, n=6, p1="0.10", p2="0.05"),
                       make_rate("4420", f=30, n=6, p1="0.07", p2="0.07"), name="Callback")


def test_worked_example_amounts_match_the_doc():
    at = dt.datetime(2024, 6, 3, 10, tzinfo=UTC)
    leg_a = quote(worked_tariff(), "+1 818 555 0100", 125, at)
    leg_b = quote(worked_tariff(), "+44 20 7946 0000", 97, at)
    assert f"**{leg_a.amount}**" in TEXT and f"**{leg_b.amount}**" in TEXT
    assert f"**{leg_a.amount + leg_b.amount}**" in TEXT
    assert (leg_a.charge.charged_seconds, leg_b.charge.charged_seconds) == (126, 102)


def test_max_duration_example_matches_the_doc():
    at = dt.datetime(2024, 6, 3, 10, tzinfo=UTC)
    a, b = price_leg(worked_tariff(), "18185550100", at), price_leg(worked_tariff(), "4420", at)
    t = max_duration(Decimal("1.00"), a, 20, b)
    assert f"is {t} s" in TEXT
