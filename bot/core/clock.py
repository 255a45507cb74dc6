"""The one clock of Relais.

Every time-dependent decision reads ``Clock.now()``; SQL never calls the database's ``now()``
and receives this value as a parameter instead. ``datetime.now`` is patched by time-machine,
so tests move time for the whole process.
"""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """Aware UTC time. Subclass or replace in tests when a fixed value is simpler."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def minute_floor(moment: datetime) -> datetime:
    """Truncate to the minute (due times of scheduled jobs)."""
    return moment.replace(second=0, microsecond=0)
