"""What the parts of a report share: the period, the figures' shape, errors, labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_DAYS = 30
CALLBACK_KINDS = ("booked", "reached", "no_answer", "cancelled", "moved")
CHECKIN_NEEDS = ("help", "callback")


class ReportError(ValueError):
    """A period that cannot be used; ``str()`` is one line."""


@dataclass(frozen=True)
class Period:
    since: datetime  # aware UTC, included
    until: datetime  # aware UTC, excluded
    tz: str

    @property
    def first_day(self) -> date:
        return self.since.astimezone(ZoneInfo(self.tz)).date()

    @property
    def last_day(self) -> date:
        return (self.until - timedelta(microseconds=1)).astimezone(ZoneInfo(self.tz)).date()

    def days(self) -> list[date]:
        day, out = self.first_day, []
        while day <= self.last_day:
            out.append(day)
            day += timedelta(days=1)
        return out


def _parse_day(text: str, option: str, tz: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{option}: expected a date like 2026-11-01, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value


def make_period(since: str | None, until: str | None, tz: str, now: datetime) -> Period:
    """``--since DATE`` (from its first minute) and ``--until DATE`` (to its last minute,
    included), in ``tz``; by default the last 30 days, today included."""
    zone = ZoneInfo(tz)
    if until is not None:
        end = _parse_day(until, "--until", tz)
        if len(until.strip()) <= 10:  # a date: the whole day
            end = datetime.combine(end.date() + timedelta(days=1), time(), tzinfo=zone)
    else:
        end = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), time(),
                               tzinfo=zone)
    if since is not None:
        start = _parse_day(since, "--since", tz)
    else:
        start = end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ReportError("--since must come before --until")
    return Period(start.astimezone(UTC), end.astimezone(UTC), tz)
