"""Month splitting of usage: calendar months in UTC, exact figures, rounding that adds up.

Pure arithmetic (no cloud): the functional test checks the same figures against Nova.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest

from stackhop.usage.months import (
    ServerLife,
    Totals,
    apportion,
    breakdown,
    exact_figures,
    months_between,
    round_figure,
    running_us,
)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def life(
    start: str | None,
    end: str | None = None,
    *,
    vcpus: int = 1,
    memory_mb: int = 512,
    local_gb: int = 1,
    name: str = "s",
) -> ServerLife:
    return ServerLife(
        name, name, vcpus, memory_mb, local_gb, t(start) if start else None, t(end) if end else None
    )


def test_months_are_calendar_months_clipped_to_the_period() -> None:
    months = months_between(t("2026-01-15T12:00:00"), t("2026-03-10T06:00:00"))
    assert [m.label for m in months] == ["2026-01", "2026-02", "2026-03"]
    assert months[0].start == t("2026-01-15T12:00:00")
    assert months[0].end == months[1].start == t("2026-02-01T00:00:00")
    assert months[1].end == months[2].start == t("2026-03-01T00:00:00")
    assert months[2].end == t("2026-03-10T06:00:00")


def test_months_cross_the_year_and_know_leap_february() -> None:
    months = months_between(t("2027-12-20T00:00:00"), t("2028-03-01T00:00:00"))
    assert [m.label for m in months] == ["2027-12", "2028-01", "2028-02"]
    assert months[2].end - months[2].start == timedelta(days=29)


def test_months_are_utc_whatever_zone_the_bounds_are_given_in() -> None:
    # 01:00 on March 1st in UTC+2 is still February in UTC.
    plus_two = timezone(timedelta(hours=2))
    months = months_between(
        datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, tzinfo=plus_two)
    )
    assert [m.label for m in months] == ["2026-02"]


def test_an_empty_or_reversed_period_has_no_month() -> None:
    assert months_between(t("2026-03-01T00:00:00"), t("2026-03-01T00:00:00")) == []
    assert months_between(t("2026-04-01T00:00:00"), t("2026-03-01T00:00:00")) == []


@pytest.mark.parametrize(
    ("server", "hours"),
    [
        (life("2026-01-10T00:00:00", "2026-01-20T00:00:00"), 0),  # ended before
        (life("2026-03-05T00:00:00"), 0),  # started after
        (life("2026-01-31T18:00:00", "2026-02-01T06:00:00"), 6),  # ends inside
        (life("2026-02-27T22:30:00"), 25.5),  # still running: charged to the end
        (life("2026-01-01T00:00:00"), 28 * 24),  # the whole month
        (life(None), 0),  # never launched
    ],
)
def test_running_time_inside_february(server: ServerLife, hours: float) -> None:
    us = running_us(server, t("2026-02-01T00:00:00"), t("2026-03-01T00:00:00"))
    assert Fraction(us, 3_600_000_000) == Fraction(hours)


def test_figures_scale_with_the_flavor() -> None:
    # 2 vCPUs, 3 GiB RAM, 20 GB disk for 10 hours.
    figures = exact_figures(
        [life("2026-05-01T00:00:00", "2026-05-01T10:00:00", vcpus=2, memory_mb=3072, local_gb=20)],
        t("2026-05-01T00:00:00"),
        t("2026-06-01T00:00:00"),
    )
    assert (figures.vcpu_hours, figures.ram_gb_hours, figures.disk_gb_hours) == (20, 30, 200)
    assert figures.servers == 1


def test_a_server_over_three_months_splits_exactly() -> None:
    servers = [
        life("2026-01-15T12:00:00", "2026-03-10T06:00:00", name="a"),  # 396 + 672 + 222 h
        life("2026-02-28T18:30:00", "2026-03-01T01:15:00", vcpus=2, name="b"),  # 5.5 + 1.25 h
    ]
    b = breakdown("p", servers, t("2026-01-15T12:00:00"), t("2026-04-01T00:00:00"))
    assert [m.month for m in b.months] == ["2026-01", "2026-02", "2026-03"]
    assert [m.vcpu_hours for m in b.months] == [
        Decimal("396.00"),
        Decimal("683.00"),
        Decimal("224.50"),
    ]
    assert [m.ram_gb_hours for m in b.months] == [
        Decimal("198.00"),
        Decimal("338.75"),
        Decimal("111.63"),  # 111.625 exactly: the total 648.375 rounds to even, up
    ]
    assert b.total.ram_gb_hours == Decimal("648.38")
    assert [m.servers for m in b.months] == [1, 2, 2]
    assert b.total.vcpu_hours == Decimal("1303.50") == sum(m.vcpu_hours for m in b.months)
    assert b.total.servers == 2


def test_round_figure_rounds_exact_halves_to_even() -> None:
    assert round_figure(Fraction(5, 1000)) == Decimal("0.00")
    assert round_figure(Fraction(15, 1000)) == Decimal("0.02")
    assert round_figure(Fraction(1, 3)) == Decimal("0.33")
    assert round_figure(Fraction(2, 3)) == Decimal("0.67")
    assert round_figure(2.675) == Decimal("2.68")  # a float is read as it prints


def test_apportion_gives_missing_hundredths_to_the_largest_remainders() -> None:
    third = Fraction(1, 300)  # 0.00333... each
    assert apportion([third] * 3, Decimal("0.01")) == [Decimal("0.01"), Decimal("0"), Decimal("0")]
    parts = [Fraction(1001, 1000), Fraction(2004, 1000), Fraction(3005, 1000)]  # 6.01
    assert apportion(parts, Decimal("6.01")) == [Decimal("1.00"), Decimal("2.00"), Decimal("3.01")]


def test_apportion_follows_a_total_slightly_off_the_exact_sum() -> None:
    parts = [Fraction(1), Fraction(2), Fraction(3)]
    assert sum(apportion(parts, Decimal("5.99"))) == Decimal("5.99")
    assert sum(apportion(parts, Decimal("6.02"))) == Decimal("6.02")


def test_months_always_add_up_to_the_total_and_stay_within_a_hundredth() -> None:
    rng = random.Random(7)
    base = t("2025-01-01T00:00:00")
    for _ in range(200):
        servers = []
        for n in range(rng.randint(1, 6)):
            start = base + timedelta(microseconds=rng.randrange(0, 400 * 86400 * 10**6))
            end = start + timedelta(microseconds=rng.randrange(1, 200 * 86400 * 10**6))
            servers.append(
                ServerLife(
                    str(n),
                    str(n),
                    rng.randint(1, 16),
                    rng.choice([512, 1000, 2048, 3333]),
                    rng.randint(0, 80),
                    start,
                    end if rng.random() < 0.7 else None,
                )
            )
        period_end = base + timedelta(days=rng.randint(30, 700), seconds=rng.randint(0, 86399))
        b = breakdown("p", servers, base, period_end)
        for attr in ("vcpu_hours", "ram_gb_hours", "disk_gb_hours"):
            values = [getattr(m, attr) for m in b.months]
            assert sum(values) == getattr(b.total, attr)
            for m, value in zip(months_between(base, period_end), values, strict=True):
                exact = getattr(exact_figures(servers, m.start, m.end), attr)
                assert abs(Fraction(value) - exact) < Fraction(1, 100)


def test_given_totals_are_what_the_months_add_up_to() -> None:
    servers = [life("2026-01-01T00:00:00", "2026-02-15T00:00:00")]
    nova = Totals(Decimal("1080.00"), Decimal("540.00"), Decimal("1080.00"))
    b = breakdown("p", servers, t("2026-01-01T00:00:00"), t("2026-03-01T00:00:00"), nova)
    assert [m.vcpu_hours for m in b.months] == [Decimal("744.00"), Decimal("336.00")]
    assert b.total.ram_gb_hours == sum(m.ram_gb_hours for m in b.months) == Decimal("540.00")
