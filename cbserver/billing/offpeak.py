"""Peak or off-peak: which period an instant falls in, and where a call crosses a boundary.

An off-peak period is a set of windows (days of the week and an inclusive range
of whole minutes) in an IANA time zone; every instant outside them is peak. The
local wall-clock time of an instant decides, so daylight-saving changes move the
boundaries in UTC exactly as the local clocks move. Pure functions, no I/O.

For splitting, a call is a sequence of whole seconds: second ``k`` (0-based)
covers ``[connect + k, connect + k + 1)`` and belongs to the period of its
starting instant ``connect + k``.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from cbserver.billing.model import OffPeakPeriod

_SECOND = dt.timedelta(seconds=1)
_MINUTES_PER_DAY = 1440


def is_offpeak(period: OffPeakPeriod | None, instant: dt.datetime) -> bool:
    """True when the aware ``instant`` is inside one of the period's windows."""
    if period is None:
        return False
    local = instant.astimezone(period.zone)
    weekday = local.weekday()
    minute = local.hour * 60 + local.minute
    for window in period.windows:
        if weekday in window.days and window.start_minute <= minute < window.stop_minute:
            return True
    return False


@lru_cache(maxsize=256)
def _breakpoints(period: OffPeakPeriod) -> tuple[int, ...]:
    """Minutes of the day at which the period can change (plus the next midnight)."""
    points = {_MINUTES_PER_DAY}
    for window in period.windows:
        points.add(window.start_minute)
        points.add(window.stop_minute)
    return tuple(sorted(points))


def _ceil_seconds(delta: dt.timedelta) -> int:
    whole, rest = divmod(delta, _SECOND)
    return whole + (1 if rest else 0)


def _next_candidate(period: OffPeakPeriod, points: list[int], connect: dt.datetime, k: int) -> int:
    """The next second index after ``k`` at which the period may change."""
    instant = connect + k * _SECOND
    local = instant.astimezone(period.zone)
    offset = local.utcoffset()
    minute = local.hour * 60 + local.minute
    next_minute = next(p for p in points if p > minute)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    wall = midnight + dt.timedelta(minutes=next_minute)
    candidate_utc = (wall - offset).replace(tzinfo=dt.UTC)
    candidate = max(k + 1, _ceil_seconds(candidate_utc - connect))
    # A UTC-offset change (daylight saving) before the candidate moves the wall
    # clock: find the first second with the new offset and look again from there.
    if (connect + candidate * _SECOND).astimezone(period.zone).utcoffset() != offset:
        low, high = k, candidate  # offset(low) == offset, offset(high) != offset
        while high - low > 1:
            mid = (low + high) // 2
            if (connect + mid * _SECOND).astimezone(period.zone).utcoffset() == offset:
                low = mid
            else:
                high = mid
        candidate = high
    return candidate


def period_runs(
    period: OffPeakPeriod | None, connect: dt.datetime, duration: int
) -> list[tuple[int, int, bool]]:
    """Split ``duration`` seconds from ``connect`` into runs of one period.

    Returns ``[(start_second, seconds, peak), ...]`` covering ``0 .. duration``
    in order, adjacent runs always differing in period. A zero duration gives
    one empty run at the connect time's period.
    """
    peak = not is_offpeak(period, connect)
    if period is None or not period.windows or duration <= 0:
        return [(0, max(duration, 0), peak)]
    points = _breakpoints(period)
    runs: list[tuple[int, int, bool]] = []
    start, k = 0, 0
    while True:
        k = _next_candidate(period, points, connect, k)
        if k >= duration:
            runs.append((start, duration - start, peak))
            return runs
        now_peak = not is_offpeak(period, connect + k * _SECOND)
        if now_peak != peak:
            runs.append((start, k - start, peak))
            start, peak = k, now_peak
