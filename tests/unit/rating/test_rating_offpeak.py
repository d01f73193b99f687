import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow
from cbserver.billing.offpeak import is_offpeak, period_runs
from cbserver.billing.rating import charge, price_leg, rate_leg

from .helpers import UTC, make_rate, make_tariff

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EVERY_DAY = "mon-sun"


def period(zone, *ranges):
    return OffPeakPeriod(zone, tuple(OffPeakWindow.parse(f"{EVERY_DAY} {r}") for r in ranges))


NIGHTS = ("00:00-07:59", "20:00-23:59")


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def test_no_period_means_always_peak():
    assert not is_offpeak(None, utc(2024, 1, 1, 3))


def test_end_minute_is_inclusive_to_its_last_microsecond():
    p = period("Europe/Berlin", *NIGHTS)
    # 2024-01-15 is winter: CET = UTC+1, so 08:00 local is 07:00 UTC
    assert is_offpeak(p, utc(2024, 1, 15, 6, 59, 59, 999999))
    assert not is_offpeak(p, utc(2024, 1, 15, 7, 0, 0))
    assert not is_offpeak(p, utc(2024, 1, 15, 18, 59, 59))
    assert is_offpeak(p, utc(2024, 1, 15, 19, 0, 0))  # 20:00 local, start inclusive


def test_day_of_week_is_the_local_day():
    p = OffPeakPeriod("America/New_York", (OffPeakWindow.parse("sat-sun 00:00-23:59"),))
    # Friday 2024-06-07 23:30 EDT is Saturday 03:30 UTC: still Friday locally -> peak
    assert not is_offpeak(p, utc(2024, 6, 8, 3, 30))
    assert is_offpeak(p, utc(2024, 6, 8, 4, 0))  # Saturday 00:00 EDT


def test_berlin_spring_forward_moves_the_utc_boundary():
    p = period("Europe/Berlin", *NIGHTS)
    # Saturday 2024-03-30 (CET, UTC+1): peak from 07:00 UTC
    assert is_offpeak(p, utc(2024, 3, 30, 6, 59, 59))
    assert not is_offpeak(p, utc(2024, 3, 30, 7, 0))
    # Sunday 2024-03-31 (CEST since 01:00 UTC, UTC+2): peak from 06:00 UTC
    assert is_offpeak(p, utc(2024, 3, 31, 5, 59, 59))
    assert not is_offpeak(p, utc(2024, 3, 31, 6, 0))


def test_berlin_skipped_hour_is_never_offpeak():
    p = period("Europe/Berlin", "02:00-02:59")
    # 01:59:59 CET then 03:00:00 CEST: the local hour 02 does not exist that day
    assert not is_offpeak(p, utc(2024, 3, 31, 0, 59, 59))
    assert not is_offpeak(p, utc(2024, 3, 31, 1, 0, 0))
    assert period_runs(p, utc(2024, 3, 31, 0, 30), 3600) == [(0, 3600, True)]


def test_berlin_repeated_hour_is_offpeak_both_times():
    p = period("Europe/Berlin", "02:00-02:59")
    # 2024-10-27: 02:00-02:59 CEST (00:00-00:59 UTC) then again in CET (01:00-01:59 UTC)
    assert not is_offpeak(p, utc(2024, 10, 26, 23, 59, 59))
    assert is_offpeak(p, utc(2024, 10, 27, 0, 0))
    assert is_offpeak(p, utc(2024, 10, 27, 1, 59, 59))
    assert not is_offpeak(p, utc(2024, 10, 27, 2, 0))
    runs = period_runs(p, utc(2024, 10, 26, 23, 30), 4 * 3600)
    assert runs == [(0, 1800, True), (1800, 7200, False), (9000, 5400, True)]


def test_new_york_fall_back_inside_a_call():
    p = period("America/New_York", "00:00-07:59")
    connect = dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK)  # 01:30 EDT = 05:30 UTC
    assert connect.astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    runs = period_runs(p, connect, 8 * 3600)
    # 08:00 EST is 13:00 UTC: 7.5 h of off-peak (not 6.5 h as in EDT), then peak
    assert runs == [(0, 27000, False), (27000, 1800, True)]


def test_new_york_spring_forward_inside_a_call():
    p = period("America/New_York", "00:00-07:59")
    connect = utc(2024, 3, 10, 6, 0)  # 01:00 EST; clocks jump 02:00 EST -> 03:00 EDT
    runs = period_runs(p, connect, 8 * 3600)
    # 08:00 EDT is 12:00 UTC: 6 h after connect
    assert runs == [(0, 6 * 3600, False), (6 * 3600, 2 * 3600, True)]


def test_runs_cut_at_whole_seconds_after_connect():
    p = period("Etc/UTC", "20:00-23:59")
    connect = utc(2024, 1, 1, 19, 59, 58, 500000)
    # second 0 starts 19:59:58.5, second 1 at 19:59:59.5, second 2 at 20:00:00.5
    assert period_runs(p, connect, 5) == [(0, 2, True), (2, 3, False)]


def test_runs_over_several_days_alternate():
    p = period("Etc/UTC", "00:00-07:59")
    runs = period_runs(p, utc(2024, 1, 1, 12), 2 * 86400)
    assert [r[2] for r in runs] == [True, False, True, False, True]
    assert sum(r[1] for r in runs) == 2 * 86400
    assert all(a[0] + a[1] == b[0] for a, b in zip(runs, runs[1:], strict=False))


def peak_offpeak_rate():
    return make_rate(
        f=60, n=60, p1="0.60", p2="0.60", mode="peak_offpeak",
        offpeak_first_interval=60, offpeak_next_interval=30,
        offpeak_first_price=Decimal("0.30"), offpeak_next_price=Decimal("0.30"),
    )


def test_whole_call_takes_the_connect_time_period_by_default():
    tariff = make_tariff(peak_offpeak_rate(), offpeak=period("Etc/UTC", "20:00-23:59"))
    leg = rate_leg(tariff, "1818", 90, utc(2024, 1, 1, 19, 59, 30))
    assert leg.peak is True
    assert leg.charged_seconds == 120
    assert leg.amount == charge(peak_offpeak_rate(), 90, peak=True).amount
    assert leg.parts == ()


def test_split_at_boundary_prices_each_part_by_its_period():
    tariff = make_tariff(peak_offpeak_rate(), offpeak=period("Etc/UTC", "20:00-23:59"),
                         split_at_boundary=True)
    leg = rate_leg(tariff, "1818", 90, utc(2024, 1, 1, 19, 59, 30))
    # first interval (60 s) at the connect period's first price: 0.60 * 60 / 60 = 0.60;
    # seconds 60..89 are off-peak: one 30 s next interval at 0.30: 0.30 * 30 / 60 = 0.15
    assert leg.amount == Decimal("0.75000")
    assert leg.charged_seconds == 90
    assert [(p.start_second, p.seconds, p.peak, p.charged_seconds) for p in leg.parts] == [
        (0, 30, True, 60), (30, 60, False, 30)]


def test_split_rounds_each_part_up_to_its_own_next_interval():
    tariff = make_tariff(peak_offpeak_rate(), offpeak=period("Etc/UTC", "20:00-23:59"),
                         split_at_boundary=True)
    leg = rate_leg(tariff, "1818", 130, utc(2024, 1, 1, 19, 58, 50))
    # peak seconds 0..69 -> 10 s after f, rounded to 60; off-peak 70..129 -> 60 s, 2 x 30
    assert leg.charged_seconds == 60 + 60 + 60
    assert leg.amount == (Decimal("0.60") * 120 + Decimal("0.30") * 60) / 60


def test_pricer_reports_connect_period():
    tariff = make_tariff(peak_offpeak_rate(), offpeak=period("Europe/Berlin", *NIGHTS))
    assert price_leg(tariff, "1818", utc(2024, 3, 31, 5, 59, 59)).peak is False
    assert price_leg(tariff, "1818", utc(2024, 3, 31, 6, 0)).peak is True


@pytest.mark.parametrize("split", [False, True])
def test_no_offpeak_period_charges_peak(split):
    tariff = make_tariff(peak_offpeak_rate(), split_at_boundary=split)
    assert rate_leg(tariff, "1818", 61, utc(2024, 1, 1, 3)).amount == Decimal("1.20000")


def test_split_never_splits_a_flat_rate():
    flat = make_rate(f=60, n=60, p1="0.60", p2="0.60")
    tariff = make_tariff(flat, offpeak=period("Etc/UTC", "20:00-23:59"), split_at_boundary=True)
    leg = rate_leg(tariff, "1818", 130, utc(2024, 1, 1, 19, 58, 50))
    assert leg.amount == charge(flat, 130).amount
    assert leg.charged_seconds == 180
    assert leg.parts == ()


def test_split_without_a_boundary_has_no_parts():
    tariff = make_tariff(peak_offpeak_rate(), offpeak=period("Etc/UTC", "20:00-23:59"),
                         split_at_boundary=True)
    leg = rate_leg(tariff, "1818", 130, utc(2024, 1, 1, 12))
    assert leg.parts == ()
    assert leg.amount == charge(peak_offpeak_rate(), 130, peak=True).amount
