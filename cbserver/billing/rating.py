"""Pure rating: what one leg of a call costs, which rate applies, and how long a call may last.

The charge rule, for a leg of ``d`` whole seconds priced by a tier with first
interval ``f``, next interval ``n``, first price ``P1`` and next price ``P2``
(prices per minute)::

    d = 0  ->  nothing is charged (the leg never connected; no formula either)
    c      =  f + ceil(max(0, d - f) / n) * n            charged seconds
    amount =  P1 * f / 60 + P2 * (c - f) / 60

The amount is computed exactly (50 significant digits) and rounded once, at
the very end, to 5 decimal places, ROUND_HALF_UP. A rate formula, when present,
replaces the amount before that single rounding. No I/O, no Twisted.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, DivisionByZero, InvalidOperation, Overflow

from cbserver.billing.formula import FormulaEvaluationError
from cbserver.billing.model import (
    WILDCARD,
    ChargePart,
    InvalidCallError,
    LegCharge,
    NoRateError,
    Quote,
    Rate,
    RatingError,
    TariffRates,
    Tier,
)
from cbserver.billing.numbers import normalise_number
from cbserver.billing.offpeak import is_offpeak, period_runs

#: Longest leg the rating core accepts (7 days); anything longer is an input error.
MAX_DURATION = 7 * 86400

_CTX = Context(prec=50, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])
_PLACES = Decimal("0.00001")
_SIXTY = Decimal(60)
_ZERO = Decimal(0)
_ZERO_AMOUNT = Decimal("0.00000")


class RateFormulaError(RatingError):
    """A rate's formula failed at rating time, or produced a negative charge."""


def charged_seconds(duration: int, first_interval: int, next_interval: int) -> int:
    """Seconds charged for ``duration``: ``f + ceil(max(0, d - f) / n) * n``; 0 when d is 0."""
    if duration <= 0:
        return 0
    if duration <= first_interval:
        return first_interval
    return first_interval + -(-(duration - first_interval) // next_interval) * next_interval


def connected_seconds(seconds: float) -> int:
    """Whole seconds a leg connected for ``seconds`` (clock time) is rated for: rounded up.

    A started second is charged. The one microsecond of tolerance absorbs float noise in
    clock arithmetic (``answered + 48 - answered`` may be ``48.000000001``). The xDR's
    ``duration`` (``Leg.duration()``), the re-authorization's ``leg_a_elapsed`` and the
    session's cut (``paid_seconds``) all count a leg's seconds this way.
    """
    return max(0, math.ceil(seconds - 1e-6))


def round_amount(value: Decimal) -> Decimal:
    """The one rounding of the rating core: 5 decimal places, ROUND_HALF_UP."""
    return value.quantize(_PLACES, rounding=ROUND_HALF_UP, context=_CTX)


def exact_amount(tier: Tier, charged: int) -> Decimal:
    """``P1 * f / 60 + P2 * (charged - f) / 60``, unrounded (``charged`` already >= f)."""
    mul = _CTX.multiply
    total = _CTX.add(
        mul(tier.first_price, tier.first_interval),
        mul(tier.next_price, charged - tier.first_interval),
    )
    return _CTX.divide(total, _SIXTY)


def check_duration(duration: object) -> int:
    """Return ``duration`` if it is a whole number of seconds in 0..MAX_DURATION."""
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise InvalidCallError(f"duration: must be whole seconds, got {duration!r}")
    if not 0 <= duration <= MAX_DURATION:
        raise InvalidCallError(f"duration: must be from 0 to {MAX_DURATION} seconds, got {duration}")
    return duration


def check_connect_time(connect_time: object) -> dt.datetime:
    """Return ``connect_time`` in UTC; refuse anything but an aware datetime."""
    if not isinstance(connect_time, dt.datetime):
        raise InvalidCallError(f"connect_time: must be a datetime, got {connect_time!r}")
    if connect_time.tzinfo is None or connect_time.utcoffset() is None:
        raise InvalidCallError("connect_time: must carry a time zone (naive time refused)")
    return connect_time.astimezone(dt.UTC)


def _apply_formula(
    rate: Rate, tier: Tier, duration: int, charged: int, amount: Decimal, peak: bool
) -> Decimal:
    formula = rate.parsed_formula
    assert formula is not None
    env = {
        "duration": Decimal(duration),
        "charged": Decimal(charged),
        "first_interval": Decimal(tier.first_interval),
        "next_interval": Decimal(tier.next_interval),
        "first_price": tier.first_price,
        "next_price": tier.next_price,
        "amount": amount,
        "peak": Decimal(1 if peak else 0),
    }
    try:
        result = formula.evaluate(env)
    except FormulaEvaluationError as exc:
        raise RateFormulaError(f"rate {rate.prefix!r} v{rate.version}: {exc}") from exc
    if result < _ZERO:
        raise RateFormulaError(
            f"rate {rate.prefix!r} v{rate.version}: formula gave a negative charge {result}"
        )
    return result


def charge(rate: Rate, duration: int, peak: bool = True) -> LegCharge:
    """Charge a leg of ``duration`` seconds wholly at the peak or off-peak tier of ``rate``."""
    duration = check_duration(duration)
    if duration == 0:
        return LegCharge(rate, 0, peak, 0, _ZERO_AMOUNT)
    charged, amount = _charged_and_amount(rate, duration, peak)
    return LegCharge(rate, duration, peak, charged, amount)


# Rounded amounts of the standard rule, (id(tier), charged seconds) -> (tier, amount): a pure
# function of the tier's four numbers and the charged seconds, asked again and again (the
# session's cut searches dozens of durations per callback, authorization and xDRs price the
# same legs, and callbacks to one destination share its tier). The entry holds its tier, so
# the id cannot be reused while it is cached; the oldest entry goes first past the bound.
_AMOUNTS: dict[tuple[int, int], tuple[Tier, Decimal]] = {}
_AMOUNTS_MAX = 4096


def _standard_amount(tier: Tier, charged: int) -> Decimal:
    """``round_amount(exact_amount(tier, charged))``, remembered in ``_AMOUNTS``."""
    key = (id(tier), charged)
    hit = _AMOUNTS.get(key)
    if hit is not None and hit[0] is tier:
        return hit[1]
    amount = round_amount(exact_amount(tier, charged))
    if len(_AMOUNTS) >= _AMOUNTS_MAX:
        del _AMOUNTS[next(iter(_AMOUNTS))]
    _AMOUNTS[key] = (tier, amount)
    return amount


def _charged_and_amount(rate: Rate, duration: int, peak: bool) -> tuple[int, Decimal]:
    """``charge``'s charged seconds and rounded amount for a checked ``duration`` > 0."""
    tier = rate.peak_tier if peak else rate.offpeak_tier
    charged = charged_seconds(duration, tier.first_interval, tier.next_interval)
    if rate.parsed_formula is None:
        return charged, _standard_amount(tier, charged)
    amount = exact_amount(tier, charged)
    amount = _apply_formula(rate, tier, duration, charged, amount, peak)
    return charged, round_amount(amount)


def charge_split(rate: Rate, runs: list[tuple[int, int, bool]]) -> LegCharge:
    """Charge a leg whose seconds fall in several periods (``split_at_boundary`` mode).

    The first interval is taken once, at the start of the call, from the tier of
    the connect time's period, and is never split. The seconds after it are cut
    at each boundary; each part is rounded up to whole next intervals of its own
    period's tier and priced at that tier's next price. Adjacent runs priced by
    equal tiers are joined first; when one run remains (a flat rate, or no
    boundary crossed) this is exactly ``charge`` and ``parts`` is empty.
    """
    duration = sum(seconds for _, seconds, _ in runs)
    duration = check_duration(duration)
    first_peak = runs[0][2]
    if duration == 0:
        return LegCharge(rate, 0, first_peak, 0, _ZERO_AMOUNT)
    runs = _merge_equal_tiers(rate, runs)
    if len(runs) == 1:  # nothing to split: a flat rate, or no boundary crossed
        return charge(rate, duration, first_peak)
    first_tier = rate.tier(first_peak)
    f = first_tier.first_interval
    total = _CTX.multiply(first_tier.first_price, f)
    charged_total = f
    parts = []
    for index, (start, seconds, peak) in enumerate(runs):
        tier = rate.tier(peak)
        after_first = max(0, start + seconds - max(start, f))
        part_charged = -(-after_first // tier.next_interval) * tier.next_interval
        total = _CTX.add(total, _CTX.multiply(tier.next_price, part_charged))
        charged_total += part_charged
        if index == 0:
            part_charged += f
        parts.append(ChargePart(start, seconds, peak, part_charged))
    amount = _CTX.divide(total, _SIXTY)
    if rate.parsed_formula is not None:
        amount = _apply_formula(rate, first_tier, duration, charged_total, amount, first_peak)
    return LegCharge(rate, duration, first_peak, charged_total, round_amount(amount), tuple(parts))


def _merge_equal_tiers(rate: Rate, runs: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """Join adjacent runs priced by the same tier (always the case for a flat rate)."""
    merged = [runs[0]]
    for start, seconds, peak in runs[1:]:
        last_start, last_seconds, last_peak = merged[-1]
        if rate.tier(peak) == rate.tier(last_peak):
            merged[-1] = (last_start, last_seconds + seconds, last_peak)
        else:
            merged.append((start, seconds, peak))
    return merged


def select_rate(tariff: TariffRates, digits: str, connect_utc: dt.datetime) -> Rate:
    """The rate for normalised ``digits`` at ``connect_utc`` (an aware UTC datetime).

    Longest prefix first; for a prefix, the version with the latest
    effective_from at or before the connect time (the higher version number on
    a tie). A prefix whose versions are all in the future is skipped. The ``|``
    wildcard comes last. Raises ``NoRateError`` when nothing matches.
    """
    index = tariff.index
    size = len(digits)
    for length in tariff.prefix_lengths:
        if length > size:
            continue
        versions = index.get(digits[:length])
        if versions is not None:
            position = bisect_right(versions.starts, connect_utc)
            if position:
                return versions.rates[position - 1]
    versions = index.get(WILDCARD)
    if versions is not None:
        position = bisect_right(versions.starts, connect_utc)
        if position:
            return versions.rates[position - 1]
    name = f" {tariff.name!r}" if tariff.name else ""
    raise NoRateError(f"number: no rate in tariff{name} for {digits} at {connect_utc.isoformat()}")


@dataclass(frozen=True, slots=True)
class LegPricer:
    """A leg's rate bound to its tariff and connect time: prices any duration of it."""

    tariff: TariffRates
    rate: Rate
    connect_time: dt.datetime  # UTC
    peak: bool

    def charge(self, duration: int) -> LegCharge:
        """The charge for ``duration`` seconds of this leg."""
        tariff = self.tariff
        if tariff.split_at_boundary and tariff.offpeak is not None and self.rate.is_split_able:
            return charge_split(self.rate, period_runs(tariff.offpeak, self.connect_time, duration))
        return charge(self.rate, duration, self.peak)

    def amount(self, duration: int) -> Decimal:
        """The rounded amount for ``duration`` seconds of this leg: ``charge(duration).amount``
        without building the ``LegCharge`` (the session's cut prices dozens of durations)."""
        tariff = self.tariff
        if tariff.split_at_boundary and tariff.offpeak is not None and self.rate.is_split_able:
            return self.charge(duration).amount
        duration = check_duration(duration)
        if duration == 0:
            return _ZERO_AMOUNT
        return _charged_and_amount(self.rate, duration, self.peak)[1]


def price_leg(tariff: TariffRates, number: str, connect_time: dt.datetime) -> LegPricer:
    """Select the rate for ``number`` at ``connect_time`` and bind it into a ``LegPricer``."""
    connect_utc = check_connect_time(connect_time)
    rate = select_rate(tariff, normalise_number(number), connect_utc)
    peak = not is_offpeak(tariff.offpeak, connect_utc)
    return LegPricer(tariff, rate, connect_utc, peak)


def rate_leg(tariff: TariffRates, number: str, duration: int, connect_time: dt.datetime) -> LegCharge:
    """Charge one leg: normalise, select the rate, pick the period, apply the rule."""
    duration = check_duration(duration)
    return price_leg(tariff, number, connect_time).charge(duration)


def quote(tariff: TariffRates, number: str, duration: int, connect_time: dt.datetime) -> Quote:
    """What a call of ``duration`` seconds to ``number`` connected at ``connect_time`` costs."""
    duration = check_duration(duration)
    pricer = price_leg(tariff, number, connect_time)
    return Quote(
        tariff=tariff.name,
        number=normalise_number(number),
        connect_time=pricer.connect_time,
        charge=pricer.charge(duration),
        currency=tariff.currency,
    )


def max_duration(
    budget: Decimal, leg_a: LegPricer, leg_a_elapsed: int, leg_b: LegPricer, limit: int = 86400
) -> int:
    """The largest whole ``t <= limit`` with ``A(elapsed + t) + B(t) <= budget``; 0 if none.

    ``A`` and ``B`` are the rounded charges of the two legs. The search is a
    binary search, exact when charges do not decrease with duration (always
    true of the standard rule; a formula that decreases is the operator's
    responsibility). ``t = 0`` is returned when even ``A(elapsed)`` exceeds
    the budget.
    """
    if isinstance(budget, float) or not isinstance(budget, Decimal | int):
        raise InvalidCallError(f"budget: must be a Decimal, got {budget!r}")
    budget = Decimal(budget)
    leg_a_elapsed = check_duration(leg_a_elapsed)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidCallError(f"limit: must be whole seconds of 0 or more, got {limit!r}")
    limit = min(limit, MAX_DURATION - leg_a_elapsed)

    def fits(t: int) -> bool:
        return leg_a.amount(leg_a_elapsed + t) + leg_b.amount(t) <= budget

    if limit <= 0 or not fits(0):
        return 0
    if fits(limit):
        return limit
    low, high = 0, limit  # fits(low) and not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def paid_seconds(cap: Decimal, legs, limit: float, fixed: Decimal = _ZERO) -> float | None:
    """How many more seconds the legs may stay up while their charges stay within ``cap``.

    ``legs`` is a list of ``(pricer, elapsed)``: each leg up now, its ``LegPricer`` and the
    clock seconds it has been connected. Ended ``x`` seconds from now, a leg is charged for
    ``connected_seconds(elapsed + x)`` seconds, as its xDR will be; ``fixed`` is money spent
    besides (e.g. the least legB costs if it answers at the cut). The answer is the largest
    ``x <= limit`` with ``fixed + sum(pricer.amount(...)) <= cap``, or None when even ``x = 0``
    does not fit. The charges step up just after whole seconds of each leg, so that ``x`` is
    ``limit`` or the end of one leg's whole second; each leg's seconds are binary searched
    (charges never decrease with duration, as ``max_duration`` assumes).
    """
    budget = cap - fixed
    amounts: dict[tuple[int, int], Decimal] = {}  # (leg, seconds) -> amount: the searches meet

    def amount(index: int, pricer, seconds: int) -> Decimal:
        key = (index, seconds)
        value = amounts.get(key)
        if value is None:
            value = amounts[key] = pricer.amount(seconds)
        return value

    def cost(x: float) -> Decimal:
        total = _ZERO  # a loop, not sum() over a generator: called dozens of times per search
        for i, (p, e) in enumerate(legs):
            total += amount(i, p, connected_seconds(e + x))
        return total

    at_zero = cost(0)
    if at_zero > budget:
        return None
    limit = max(0.0, min(float(limit), float(MAX_DURATION) - max((e for _, e in legs), default=0)))
    at_limit = cost(limit)
    if at_limit <= budget:
        return limit
    # Where the charges, were they linear, would reach the budget: only where the first leg's
    # search starts (any start gives the same answer), close to it for per-second prices.
    best = limit * float((budget - at_zero) / (at_limit - at_zero))
    for index, (_, elapsed) in enumerate(legs):
        # x = k - elapsed: the end of this leg's k-th second, for k in (elapsed, elapsed + limit].
        low = math.floor(elapsed)  # its x <= 0: fits (cost(0) fits, cost is monotone)
        high = connected_seconds(elapsed + limit) + 1  # its x > limit: does not fit

        def fits(k: int, elapsed=elapsed) -> bool:
            x = k - elapsed
            return x <= limit and cost(x) <= budget

        # Gallop out from the estimate (for the second leg the first leg's answer, within a
        # second of its own) to bracket the last k that fits, then bisect. The bracket holds
        # the same single boundary (fits is monotone): the answer is the plain bisection's.
        low, high = _bracket(fits, low, high, math.ceil(best + elapsed))
        if not index:
            best = 0.0
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        best = max(best, low - elapsed)
    return min(best, limit)


def _bracket(fits, low: int, high: int, guess: int) -> tuple[int, int]:
    """A narrower ``(low, high)`` with ``fits(low)`` and not ``fits(high)``, found by steps
    of 1, 2, 4... from ``guess``; ``fits`` is true up to some k in ``[low, high)``, false after."""
    guess = min(max(guess, low + 1), high - 1)
    if guess <= low:
        return low, high
    step = 1
    if fits(guess):
        low = guess
        while low + step < high:
            if not fits(low + step):
                return low, low + step
            low += step
            step *= 2
        return low, high
    high = guess
    while high - step > low:
        if fits(high - step):
            return high - step, high
        high -= step
        step *= 2
    return low, high
