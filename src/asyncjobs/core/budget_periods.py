"""Budget periods: the calendar windows a virtual key's token budget is counted in.

A budget resets at the period's boundary in UTC (the start of the hour, the day, the
ISO week's Monday, the month), so every API replica and operator shard names the same
window for the same moment without talking to each other: a period is identified by its
start, printed as text (`period_key`), which is what usage is accumulated under.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta


class Period(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def reset_text(self) -> str:
        """How Bifrost prints a reset duration (`resets every 1d`)."""
        return _RESET_TEXT[self]


_RESET_TEXT = {Period.HOUR: "1h", Period.DAY: "1d", Period.WEEK: "1w", Period.MONTH: "1M"}


def period_start(period: Period, moment: datetime) -> datetime:
    """The start (UTC) of the period that holds `moment`."""
    at = moment.astimezone(UTC)
    if period is Period.HOUR:
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: Period, moment: datetime) -> datetime:
    """When the period holding `moment` ends (the next one starts)."""
    start = period_start(period, moment)
    if period is Period.HOUR:
        return start + timedelta(hours=1)
    if period is Period.DAY:
        return start + timedelta(days=1)
    if period is Period.WEEK:
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_key(period: Period, moment: datetime) -> str:
    """The period holding `moment` as text, e.g. `day:2026-12-01T00:00:00Z`."""
    return f"{period.value}:{period_start(period, moment).strftime('%Y-%m-%dT%H:%M:%SZ')}"
