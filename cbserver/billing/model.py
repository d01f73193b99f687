"""Frozen values the rating core works on: rates, off-peak periods, tariffs, charges, quotes.

The catalog/database layer builds these from rows; every constructor validates
its fields and raises ``RateDefinitionError`` naming the offending field, so a
value that exists is a value the rating arithmetic can trust. Nothing here does
I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cbserver.billing.formula import Formula, FormulaError, parse_formula

#: The manual's "|" destination: matches every number, with the lowest priority.
WILDCARD = "|"

#: Longest interval accepted for first/next interval (one day, in seconds).
MAX_INTERVAL = 86400


class RatingError(Exception):
    """Base of every error raised by the rating core."""


class RateDefinitionError(RatingError, ValueError):
    """A rate, tariff or off-peak period with an invalid field (``field`` names it)."""

    def __init__(self, field_name: str, reason: str):
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


class InvalidFormulaError(RateDefinitionError, FormulaError):
    """A rate whose formula does not parse; ``field`` is "formula", ``column`` is 1-based."""

    def __init__(self, error: FormulaError):
        self.field = "formula"
        self.reason = error.reason
        self.column = error.column
        ValueError.__init__(self, str(error))


class InvalidNumberError(RatingError, ValueError):
    """A dialled number that cannot be normalised to digits."""


class InvalidCallError(RatingError, ValueError):
    """A call with an impossible duration or a connect time without a zone."""


class NoRateError(RatingError):
    """No rate of the tariff matches the number at that time: destination not allowed."""


class RatingMode(enum.StrEnum):
    """Flat rate, or separate peak / off-peak rate (the manual's "Rating mode")."""

    FLAT = "flat"
    PEAK_OFFPEAK = "peak_offpeak"


def _check_interval(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RateDefinitionError(name, f"must be a whole number of seconds, got {value!r}")
    if not 0 < value <= MAX_INTERVAL:
        raise RateDefinitionError(name, f"must be from 1 to {MAX_INTERVAL} seconds, got {value}")
    return value


def _check_price(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise RateDefinitionError(name, f"must be a Decimal (never a float), got {value!r}")
    price = Decimal(value)
    if not price.is_finite() or price < 0:
        raise RateDefinitionError(name, f"must be a finite price of 0 or more, got {value}")
    return price


def check_aware(name: str, value: object) -> dt.datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise ``RateDefinitionError``."""
    if not isinstance(value, dt.datetime):
        raise RateDefinitionError(name, f"must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RateDefinitionError(name, "must carry a time zone (naive datetimes are refused)")
    return value


@dataclass(frozen=True, slots=True)
class Tier:
    """The four numbers that price a leg: intervals in seconds, prices per minute."""

    first_interval: int
    next_interval: int
    first_price: Decimal
    next_price: Decimal


@dataclass(frozen=True)
class Rate:
    """One version of a tariff's rate for a destination prefix (or the ``|`` wildcard)."""

    prefix: str
    first_interval: int
    next_interval: int
    first_price: Decimal
    next_price: Decimal
    effective_from: dt.datetime
    mode: RatingMode = RatingMode.FLAT
    offpeak_first_interval: int | None = None
    offpeak_next_interval: int | None = None
    offpeak_first_price: Decimal | None = None
    offpeak_next_price: Decimal | None = None
    formula: str | None = None
    rate_id: int | None = None
    version: int = 1
    peak_tier: Tier = field(init=False, repr=False, compare=False)
    offpeak_tier: Tier = field(init=False, repr=False, compare=False)
    parsed_formula: Formula | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not (
            self.prefix == WILDCARD or (self.prefix.isascii() and self.prefix.isdigit())
        ):
            raise RateDefinitionError("prefix", f"must be digits or '|', got {self.prefix!r}")
        try:
            mode = RatingMode(self.mode)
        except ValueError:
            raise RateDefinitionError(
                "mode", f"must be 'flat' or 'peak_offpeak', got {self.mode!r}"
            ) from None
        object.__setattr__(self, "mode", mode)
        peak = Tier(
            _check_interval("first_interval", self.first_interval),
            _check_interval("next_interval", self.next_interval),
            _check_price("first_price", self.first_price),
            _check_price("next_price", self.next_price),
        )
        object.__setattr__(self, "first_price", peak.first_price)
        object.__setattr__(self, "next_price", peak.next_price)
        offpeak_names = (
            "offpeak_first_interval",
            "offpeak_next_interval",
            "offpeak_first_price",
            "offpeak_next_price",
        )
        if mode is RatingMode.PEAK_OFFPEAK:
            for name in offpeak_names:
                if getattr(self, name) is None:
                    raise RateDefinitionError(name, "is required in peak/off-peak mode")
            offpeak = Tier(
                _check_interval(offpeak_names[0], self.offpeak_first_interval),
                _check_interval(offpeak_names[1], self.offpeak_next_interval),
                _check_price(offpeak_names[2], self.offpeak_first_price),
                _check_price(offpeak_names[3], self.offpeak_next_price),
            )
            object.__setattr__(self, "offpeak_first_price", offpeak.first_price)
            object.__setattr__(self, "offpeak_next_price", offpeak.next_price)
        else:
            for name in offpeak_names:
                if getattr(self, name) is not None:
                    raise RateDefinitionError(name, "must be empty in flat mode")
            offpeak = peak
        object.__setattr__(self, "peak_tier", peak)
        object.__setattr__(self, "offpeak_tier", offpeak)
        check_aware("effective_from", self.effective_from)
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise RateDefinitionError("version", f"must be an integer, got {self.version!r}")
        parsed = None
        if self.formula is not None and self.formula.strip():
            try:
                parsed = parse_formula(self.formula)
            except FormulaError as exc:
                raise InvalidFormulaError(exc) from None
        object.__setattr__(self, "parsed_formula", parsed)

    @property
    def is_split_able(self) -> bool:
        """True when peak and off-peak tiers differ, so splitting a call can matter."""
        return self.peak_tier != self.offpeak_tier

    def tier(self, peak: bool) -> Tier:
        """The tier that prices a leg in the peak (True) or off-peak (False) period."""
        return self.peak_tier if peak else self.offpeak_tier


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class OffPeakWindow:
    """Days of the week (0 = Monday … 6 = Sunday) and a time range, both inclusive.

    ``start`` and ``end`` are whole minutes of local wall-clock time, and the
    range covers every instant from ``start`` to the end of the minute ``end``
    (``00:00``–``07:59`` is off-peak until 07:59:59.999999). A range must not
    wrap past midnight: write two windows instead.
    """

    days: frozenset[int]
    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        days = frozenset(self.days)
        if not days or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
            raise RateDefinitionError("offpeak.days", f"must be days 0-6, got {self.days!r}")
        object.__setattr__(self, "days", days)
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, dt.time) or value.second or value.microsecond:
                raise RateDefinitionError(f"offpeak.{name}", "must be a time in whole minutes")
            if value.tzinfo is not None:
                raise RateDefinitionError(f"offpeak.{name}", "is wall-clock time: no tzinfo")
        if self.end < self.start:
            raise RateDefinitionError("offpeak.end", "is before start (split at midnight)")

    @property
    def start_minute(self) -> int:
        """Minute of the day the range starts at."""
        return self.start.hour * 60 + self.start.minute

    @property
    def stop_minute(self) -> int:
        """First minute of the day after the range (exclusive bound)."""
        return self.end.hour * 60 + self.end.minute + 1

    @property
    def text(self) -> str:
        """The canonical spelling, e.g. ``"mon-fri 18:00-23:59"`` (what ``parse`` reads)."""
        days = sorted(self.days)
        groups: list[str] = []
        run_start = previous = days[0]
        for day in days[1:] + [None]:
            if day is not None and day == previous + 1:
                previous = day
                continue
            name = _DAY_NAMES[run_start]
            groups.append(name if run_start == previous else f"{name}-{_DAY_NAMES[previous]}")
            if day is not None:
                run_start = previous = day
        return f"{','.join(groups)} {self.start:%H:%M}-{self.end:%H:%M}"

    @classmethod
    def parse(cls, text: str) -> OffPeakWindow:
        """Parse ``"sat-sun 00:00-23:59"`` or ``"mon,wed 18:00-23:59"``."""
        try:
            day_part, time_part = text.split()
            days: set[int] = set()
            for item in day_part.lower().split(","):
                first, _, last = item.partition("-")
                lo = _DAY_NAMES.index(first)
                hi = _DAY_NAMES.index(last) if last else lo
                if hi < lo:
                    raise ValueError(item)
                days.update(range(lo, hi + 1))
            start, end = (dt.time.fromisoformat(t) for t in time_part.split("-"))
        except ValueError:
            raise RateDefinitionError(
                "offpeak", f"expected e.g. 'mon-fri 18:00-23:59', got {text!r}"
            ) from None
        return cls(frozenset(days), start, end)


@dataclass(frozen=True)
class OffPeakPeriod:
    """A tariff's off-peak period: windows in an IANA time zone; outside them is peak."""

    timezone: str
    windows: tuple[OffPeakWindow, ...]
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise RateDefinitionError(
                "offpeak.timezone", f"unknown IANA time zone {self.timezone!r}"
            ) from None
        object.__setattr__(self, "zone", zone)
        windows = tuple(self.windows)
        if not all(isinstance(w, OffPeakWindow) for w in windows):
            raise RateDefinitionError("offpeak.windows", "must be OffPeakWindow values")
        object.__setattr__(self, "windows", windows)


@dataclass(frozen=True, slots=True)
class ChargePart:
    """One part of a leg split at a peak/off-peak boundary (split mode only)."""

    start_second: int
    seconds: int
    peak: bool
    charged_seconds: int


@dataclass(frozen=True, slots=True)
class LegCharge:
    """What one leg costs: charged seconds and the amount rounded to 5 places half up."""

    rate: Rate
    duration: int
    peak: bool
    charged_seconds: int
    amount: Decimal
    parts: tuple[ChargePart, ...] = ()


@dataclass(frozen=True, slots=True)
class RateVersions:
    """All versions of one prefix's rate, sorted by (effective_from, version)."""

    starts: tuple[dt.datetime, ...]  # effective_from in UTC, same order as ``rates``
    rates: tuple[Rate, ...]


@dataclass(frozen=True)
class TariffRates:
    """A tariff as the rating core needs it: currency, rates, off-peak period, split switch.

    ``split_at_boundary`` False (the default) rates the whole call at the period
    of its connect time; True splits the call at each peak/off-peak boundary.
    The constructor builds the prefix index used by rate selection.
    """

    currency: str
    rates: tuple[Rate, ...]
    offpeak: OffPeakPeriod | None = None
    split_at_boundary: bool = False
    name: str = ""
    index: dict[str, RateVersions] = field(init=False, repr=False, compare=False)
    prefix_lengths: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_tariff_fields(self.currency, self.offpeak)
        builder = RateIndexBuilder()
        for rate in self.rates:
            builder.add(rate)
        for _ in builder.steps():
            pass
        _set_index(self, builder)

    @classmethod
    def assemble(cls, builder: RateIndexBuilder, currency: str, offpeak: OffPeakPeriod | None = None,
                 split_at_boundary: bool = False, name: str = "") -> TariffRates:
        """A ``TariffRates`` from a finished ``RateIndexBuilder`` (its index is not built again).

        The same value the constructor makes from ``builder``'s rates; a loader builds the index
        a piece at a time (``builder.steps()``) between returns to the reactor, then calls this.
        """
        _check_tariff_fields(currency, offpeak)
        self = object.__new__(cls)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "offpeak", offpeak)
        object.__setattr__(self, "split_at_boundary", split_at_boundary)
        object.__setattr__(self, "name", name)
        _set_index(self, builder)
        return self


def _check_tariff_fields(currency: object, offpeak: object) -> None:
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii()):
        raise RateDefinitionError("currency", f"must be an ISO 4217 code, got {currency!r}")
    if not currency.isalpha() or not currency.isupper():
        raise RateDefinitionError("currency", f"must be an ISO 4217 code, got {currency!r}")
    if offpeak is not None and not isinstance(offpeak, OffPeakPeriod):
        raise RateDefinitionError("offpeak", "must be an OffPeakPeriod or None")


def _set_index(tariff: TariffRates, builder: RateIndexBuilder) -> None:
    index = builder.index
    if builder.pending:
        raise RateDefinitionError("rates", "the index is not finished (run every builder step)")
    object.__setattr__(tariff, "rates", tuple(builder.rates))
    object.__setattr__(tariff, "index", index)
    object.__setattr__(tariff, "prefix_lengths", tuple(sorted(builder.lengths, reverse=True)))


class RateIndexBuilder:
    """The prefix index of ``TariffRates`` (prefix -> its versions in time order), built in steps.

    ``add`` every rate, then run ``steps()`` to the end (each step indexes one prefix, so a
    caller may return to its event loop between steps); ``TariffRates.assemble`` takes it.
    Selection then costs one dict lookup per distinct prefix length, whatever the size.
    """

    def __init__(self) -> None:
        self.rates: list[Rate] = []
        self.index: dict[str, RateVersions] = {}
        self.lengths: set[int] = set()  # of the indexed prefixes, the wildcard left out
        self._grouped: dict[str, list[tuple[dt.datetime, int, Rate]]] = {}

    @property
    def pending(self) -> bool:
        """Whether prefixes are added but not indexed yet."""
        return bool(self._grouped)

    def add(self, rate: Rate) -> None:
        """Add one rate version."""
        if not isinstance(rate, Rate):
            raise RateDefinitionError("rates", f"must hold Rate values, got {rate!r}")
        start = rate.effective_from.astimezone(dt.UTC)
        self._grouped.setdefault(rate.prefix, []).append((start, rate.version, rate))
        self.rates.append(rate)

    def steps(self):
        """Index the prefixes added so far, one per step (a generator)."""
        grouped, self._grouped = self._grouped, {}
        while grouped:
            # Popped, not iterated: each prefix's working list is freed in its own step, not
            # 100,000 of them at once when the loop ends (a 20 ms stall in a server).
            prefix, entries = grouped.popitem()
            entries.sort(key=lambda e: (e[0], e[1]))
            for before, after in zip(entries, entries[1:], strict=False):
                if before[:2] == after[:2]:
                    raise RateDefinitionError(
                        "rates",
                        f"prefix {prefix!r} has two versions {after[1]} "
                        f"effective from {after[0].isoformat()}",
                    )
            if prefix in self.index:
                raise RateDefinitionError("rates", f"prefix {prefix!r} added after it was indexed")
            self.index[prefix] = RateVersions(tuple(e[0] for e in entries),
                                              tuple(e[2] for e in entries))
            if prefix != WILDCARD:
                self.lengths.add(len(prefix))
            yield


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


@dataclass(frozen=True)
class Quote:
    """The answer to "what does this call cost": the rate matched and the charge."""

    tariff: str
    number: str
    connect_time: dt.datetime
    charge: LegCharge
    currency: str

    @property
    def amount(self) -> Decimal:
        """The amount, rounded to 5 places half up."""
        return self.charge.amount

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; money as strings, the amount with exactly 5 decimals."""
        rate = self.charge.rate
        return {
            "tariff": self.tariff,
            "number": self.number,
            "connect_time": self.connect_time.astimezone(dt.UTC).isoformat(),
            "matched_prefix": rate.prefix,
            "rate": {
                "rate_id": rate.rate_id,
                "version": rate.version,
                "mode": rate.mode.value,
                "effective_from": rate.effective_from.astimezone(dt.UTC).isoformat(),
                "first_interval": rate.first_interval,
                "next_interval": rate.next_interval,
                "first_price": _plain(rate.first_price),
                "next_price": _plain(rate.next_price),
                "offpeak_first_interval": rate.offpeak_first_interval,
                "offpeak_next_interval": rate.offpeak_next_interval,
                "offpeak_first_price": _plain(rate.offpeak_first_price),
                "offpeak_next_price": _plain(rate.offpeak_next_price),
                "formula": rate.formula,
            },
            "period": "peak" if self.charge.peak else "off-peak",
            "duration": self.charge.duration,
            "charged_seconds": self.charge.charged_seconds,
            "amount": format(self.charge.amount, "f"),
            "currency": self.currency,
            "parts": [
                {
                    "start_second": p.start_second,
                    "seconds": p.seconds,
                    "period": "peak" if p.peak else "off-peak",
                    "charged_seconds": p.charged_seconds,
                }
                for p in self.charge.parts
            ],
        }

    def to_json(self) -> str:
        """One JSON object with sorted keys: the stable output of ``cbserver quote``."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(", ", ": "))
