"""Calendar months (UTC) and the usage figures of each: pure arithmetic, no API.

Nova's os-simple-tenant-usage charges a server for the time between its
``started_at`` (``launched_at``) and its ``ended_at`` (``terminated_at``, or the
end of the period while it runs), clipped to the period asked for. Splitting
that time at month boundaries is therefore exact: the months of a period hold
every second of the period once. Durations are counted here in whole
microseconds (Nova's timestamps have that resolution) and the figures kept as
exact fractions until the very end, so nothing is lost before rounding.

Rounding rule (also in ``docs/usage.md``): a project's total over the whole
period is rounded to two decimals (half to even); each month is rounded down to
two decimals, and the hundredths still missing to reach the total are handed,
one each, to the months with the largest remainders (the earlier month first on
a tie). The months then add up exactly to the total, and each month differs
from its exact value by less than 0.01.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

#: Figures are given with this many decimals.
PLACES = 2
_UNIT = Decimal(1).scaleb(-PLACES)  # 0.01
_MICROSECOND = timedelta(microseconds=1)
_US_PER_HOUR = 3600 * 1_000_000
_MB_PER_GB = 1024


@dataclass(frozen=True)
class ServerLife:
    """What the month split needs of one server: its size and when it ran."""

    instance_id: str
    name: str
    vcpus: int
    memory_mb: int
    local_gb: int
    started_at: datetime | None  # None: never launched, never charged
    ended_at: datetime | None  # None: still running


@dataclass(frozen=True)
class Month:
    """One calendar month (UTC), clipped to the period: ``[start, end)``."""

    label: str  # YYYY-MM
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ExactFigures:
    """Usage of a set of servers over an interval, unrounded."""

    vcpu_hours: Fraction
    ram_gb_hours: Fraction
    disk_gb_hours: Fraction
    servers: int  # servers that ran for some time in the interval


@dataclass(frozen=True)
class Figures:
    """Usage rounded to :data:`PLACES` decimals (``month`` is ``YYYY-MM`` or ``total``)."""

    month: str
    vcpu_hours: Decimal
    ram_gb_hours: Decimal
    disk_gb_hours: Decimal
    servers: int


@dataclass(frozen=True)
class Breakdown:
    """A project's period split into months whose figures add up to ``total``."""

    project_id: str
    start: datetime
    end: datetime
    months: tuple[Figures, ...]
    total: Figures


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def month_start(moment: datetime) -> datetime:
    """Midnight UTC of the first day of ``moment``'s month."""
    m = utc(moment)
    return datetime(m.year, m.month, 1, tzinfo=UTC)


def _next_month(first: datetime) -> datetime:
    if first.month == 12:
        return first.replace(year=first.year + 1, month=1)
    return first.replace(month=first.month + 1)


def months_between(start: datetime, end: datetime) -> list[Month]:
    """The calendar months overlapping ``[start, end)``, the first and last clipped to it."""
    start, end = utc(start), utc(end)
    months: list[Month] = []
    first = month_start(start)
    while first < end:
        following = _next_month(first)
        months.append(Month(first.strftime("%Y-%m"), max(first, start), min(following, end)))
        first = following
    return months


def running_us(life: ServerLife, start: datetime, end: datetime) -> int:
    """Microseconds ``life`` ran within ``[start, end)``, as Nova charges them."""
    if life.started_at is None:
        return 0
    begin = max(utc(life.started_at), utc(start))
    stop = utc(end) if life.ended_at is None else min(utc(life.ended_at), utc(end))
    return max(0, (stop - begin) // _MICROSECOND)


def exact_figures(lives: Iterable[ServerLife], start: datetime, end: datetime) -> ExactFigures:
    """The unrounded usage of ``lives`` within ``[start, end)``."""
    vcpu_us = ram_mb_us = disk_gb_us = servers = 0
    for life in lives:
        us = running_us(life, start, end)
        if us <= 0:
            continue
        servers += 1
        vcpu_us += life.vcpus * us
        ram_mb_us += life.memory_mb * us
        disk_gb_us += life.local_gb * us
    return ExactFigures(
        vcpu_hours=Fraction(vcpu_us, _US_PER_HOUR),
        ram_gb_hours=Fraction(ram_mb_us, _US_PER_HOUR * _MB_PER_GB),
        disk_gb_hours=Fraction(disk_gb_us, _US_PER_HOUR),
        servers=servers,
    )


def _units(value: Fraction) -> tuple[int, Fraction]:
    """``value`` in hundredths: the whole hundredths (rounded down) and the remainder."""
    scaled = value / Fraction(_UNIT)
    whole = scaled.numerator // scaled.denominator
    return whole, scaled - whole


def round_figure(value: Fraction | Decimal | float) -> Decimal:
    """``value`` rounded half to even to :data:`PLACES` decimals (exactly, for a Fraction)."""
    if not isinstance(value, Fraction):
        return Decimal(str(value)).quantize(_UNIT, rounding=ROUND_HALF_EVEN)
    whole, rest = _units(value)
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    return (Decimal(whole) * _UNIT).quantize(_UNIT)


def apportion(parts: Sequence[Fraction], total: Decimal) -> list[Decimal]:
    """Round ``parts`` to :data:`PLACES` decimals so that they add up to ``total`` exactly.

    Each part is rounded down, then the hundredths missing to reach ``total`` go
    to the parts with the largest remainders (the earlier part first on a tie).
    Should ``total`` differ from the parts' exact sum by more than rounding (a
    float total from the API), the difference is spread the same way: added
    from the largest remainder down, or taken back from the smallest up.
    """
    if not parts:
        if total != 0:
            raise ValueError(f"no parts to make up a total of {total}")
        return []
    split = [_units(p) for p in parts]
    units = [whole for whole, _ in split]
    missing = int((total / _UNIT).to_integral_value()) - sum(units)
    if missing >= 0:
        order = sorted(range(len(parts)), key=lambda i: (-split[i][1], i))
        for k in range(missing):
            units[order[k % len(order)]] += 1
    else:
        order = sorted(range(len(parts)), key=lambda i: (split[i][1], -i))
        while missing < 0:
            takers = [i for i in order if units[i] > 0]
            if not takers:
                raise ValueError(f"parts cannot add up to a total of {total}")
            for i in takers[:-missing]:
                units[i] -= 1
                missing += 1
    return [(Decimal(u) * _UNIT).quantize(_UNIT) for u in units]


@dataclass(frozen=True)
class Totals:
    """The whole period's totals the months must add up to (e.g. as the API reports them)."""

    vcpu_hours: Decimal
    ram_gb_hours: Decimal
    disk_gb_hours: Decimal


def breakdown(
    project_id: str,
    lives: Sequence[ServerLife],
    start: datetime,
    end: datetime,
    totals: Totals | None = None,
) -> Breakdown:
    """Split ``[start, end)`` into months with figures that add up to the period's total.

    ``totals`` is the whole period's total to match (rounded to :data:`PLACES`);
    by default the exact total of ``lives`` rounded half to even.
    """
    months = months_between(start, end)
    exact = [exact_figures(lives, m.start, m.end) for m in months]
    whole = exact_figures(lives, start, end)
    if totals is None:
        totals = Totals(
            round_figure(whole.vcpu_hours),
            round_figure(whole.ram_gb_hours),
            round_figure(whole.disk_gb_hours),
        )
    vcpu = apportion([e.vcpu_hours for e in exact], totals.vcpu_hours)
    ram = apportion([e.ram_gb_hours for e in exact], totals.ram_gb_hours)
    disk = apportion([e.disk_gb_hours for e in exact], totals.disk_gb_hours)
    rows = tuple(
        Figures(m.label, v, r, d, e.servers)
        for m, v, r, d, e in zip(months, vcpu, ram, disk, exact, strict=True)
    )
    total = Figures(
        "total", totals.vcpu_hours, totals.ram_gb_hours, totals.disk_gb_hours, whole.servers
    )
    return Breakdown(project_id, utc(start), utc(end), rows, total)
